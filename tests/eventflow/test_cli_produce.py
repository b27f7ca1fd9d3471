"""``eventflow produce``: a mistake in the file is one ``file:line: reason`` line, and nothing is published."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from eventflow.cli import main
from events import build_decoder, samples
from events.event_file import derived_event_id
from tests.harness import read_topic


@pytest.fixture
def kafka_env(kafka_config: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])


def _write(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


_ELECTING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}


def _published(kafka_config: dict[str, str], topic: str) -> int:
    """How many records the topic holds (its partitions' high watermarks): produce has returned, so it is final.

    A topic created a moment ago may still be electing its leaders: asked again until every partition answers.
    """
    reader = Consumer({**kafka_config, "group.id": "test-watermarks"})
    deadline = time.monotonic() + 30
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        while True:
            try:
                return sum(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
            except KafkaException as exc:
                if exc.args[0].code() not in _ELECTING or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        reader.close()


def _purchase() -> dict[str, Any]:
    return samples.purchase(samples.customer())


@pytest.mark.usefixtures("kafka_env")
def test_a_record_off_the_schema_names_file_line_and_event_and_publishes_nothing(
        tmp_path: Path, topic: str, kafka_config: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(_purchase())
    del bad["customer"]["id"]
    path = _write(tmp_path / "events.jsonl", _purchase(), bad, _purchase())

    assert main(["produce", "--topic", topic, "--file", str(path)]) == 1

    assert capsys.readouterr().err.splitlines() == [
        f"{path}:2: event {bad['event_id']}: Customer.id is missing, expected string",
        f"nothing published to {topic}: 1 of 3 events invalid"]
    assert _published(kafka_config, topic) == 0


@pytest.mark.usefixtures("kafka_env")
def test_a_payload_field_off_its_event_type_is_named(tmp_path: Path, topic: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(_purchase())
    bad["payload"]["items"][0]["quantity"] = "two"
    path = _write(tmp_path / "events.jsonl", bad)

    assert main(["produce", "--topic", topic, "--file", str(path)]) == 1
    assert f"{path}:1: event {bad['event_id']}: LineItem.quantity holds 'two', expected int" in (
        capsys.readouterr().err.splitlines())


@pytest.mark.usefixtures("kafka_env")
def test_malformed_json_names_the_file_s_line(tmp_path: Path, topic: str, kafka_config: dict[str, str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "events.jsonl", _purchase(), "{not json", "", "[1, 2]")

    assert main(["produce", "--topic", topic, "--file", str(path)]) == 1

    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{path}:2: not JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:4: not a JSON object (an event is one object a line)",
        f"nothing published to {topic}: 2 line(s) not JSON objects"]
    assert _published(kafka_config, topic) == 0


@pytest.mark.usefixtures("kafka_env")
def test_a_missing_file_is_one_line(tmp_path: Path, topic: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nosuch.jsonl"
    assert main(["produce", "--topic", topic, "--file", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"eventflow: {path}: cannot read: No such file or directory; nothing published"]


@pytest.mark.usefixtures("kafka_env")
def test_an_unknown_event_type_is_named_with_a_close_match(tmp_path: Path, topic: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    typo = {**_purchase(), "event_type": "PurchaseComplete"}
    path = _write(tmp_path / "events.jsonl", typo)

    assert main(["produce", "--topic", topic, "--file", str(path)]) == 1

    (line, _) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}:1: event {typo['event_id']}: unknown event_type 'PurchaseComplete' "
                           "(did you mean 'PurchaseCompleted'?); known: CartUpdated, ")
    assert len(line) < 400


@pytest.mark.usefixtures("kafka_env")
def test_a_cloudevent_without_id_is_one_line_and_nothing_is_published(
        tmp_path: Path, topic: str, kafka_config: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    good = {"specversion": "1.0", "id": "ce-1", "source": "shop", "type": "com.shop.order", "data": {}}
    path = _write(tmp_path / "ce.jsonl", good, {k: v for k, v in good.items() if k != "id"})

    assert main(["produce", "--topic", topic, "--cloudevents", "structured", "--file", str(path)]) == 1

    assert capsys.readouterr().err.splitlines() == [
        f"{path}:2: CloudEvent lacks id (required: specversion, id, source, type)",
        f"nothing published to {topic}: 1 of 2 CloudEvents invalid"]
    assert _published(kafka_config, topic) == 0


@pytest.mark.usefixtures("kafka_env")
def test_an_event_without_id_gets_one_derived_from_its_content(tmp_path: Path, topic: str,
                                                              kafka_config: dict[str, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    event = {k: v for k, v in _purchase().items() if k != "event_id"}
    path = _write(tmp_path / "events.jsonl", event)

    assert main(["produce", "--topic", topic, "--file", str(path)]) == 0
    assert f"published 1 events to {topic}" in capsys.readouterr().out

    (message,) = read_topic(kafka_config, topic, expected=1)
    value = message.value()
    assert value is not None
    assert build_decoder({})(value, topic=topic).event_id == derived_event_id(event)
    assert derived_event_id(event) == derived_event_id(json.loads(json.dumps(event)))
    assert derived_event_id(event) != derived_event_id({**event, "occurred_at": "2020-01-01T00:00:00Z"})


def test_librdkafka_s_own_lines_stay_off_the_terminal(tmp_path: Path, topic: str,
                                                      kafka_config: dict[str, str]) -> None:
    import os
    import subprocess
    import sys

    path = _write(tmp_path / "events.jsonl", _purchase())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLOW_", "KAFKA_"))}
    # librdkafka's debug contexts make it talk on every produce: `%7|...|MSG|` lines on stderr unless routed.
    env.update({"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "EVENTFLOW_CACHE_DIR": str(tmp_path),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"], "EVENTFLOW_LIBRDKAFKA_DEBUG": "msg"})
    result = subprocess.run([sys.executable, "-m", "eventflow.cli", "produce", "--topic", topic, "--file", str(path)],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"published 1 events to {topic}"]
    assert result.stderr == ""
