"""The consumer survives a kill -9 and a Temporal outage: nothing lost, nothing started twice."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest
from temporalio.client import Client

from devstack.stack import SEARCH_ATTRIBUTES
from devstack.temporal import TemporalDevServer
from events import samples
from events.producer import EventProducer
from events.schemas import load as load_schemas
from tests.harness import (
    Bridge,
    consumer_env,
    eventually,
    read_topic,
    spawn_consumer,
    start_bridge,
    workflow_runs,
)


def _count_in(log_path: Path, marker: str) -> int:
    return log_path.read_text(errors="replace").count(marker) if log_path.exists() else 0


@pytest.mark.slow
async def test_kill_9_mid_stream_then_restart_starts_every_journey_exactly_once(
        kafka_config: dict[str, str], temporal_client: Client, endpoints: object, topic: str, tmp_path: Path,
        unique: str) -> None:
    env = consumer_env(kafka_config, temporal_client.service_client.config.target_host, topic, unique)
    worker_bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=f"{topic}-unused",
                                       outbox=tmp_path / "outbox.jsonl", suffix=unique)
    events = [samples.purchase(samples.customer()) for _ in range(400)]
    first_log, second_log = tmp_path / "consumer-1.log", tmp_path / "consumer-2.log"
    first = spawn_consumer(env, first_log)
    try:
        producer = EventProducer(kafka_config, topic, load_schemas())
        for event in events:
            producer.send(event)
        await producer.flush_async()
        await eventually(lambda: _count_in(first_log, "journey_started") >= 60, timeout_seconds=60,
                         message="the first consumer to be mid-stream")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_after = _count_in(first_log, "journey_started")
        assert killed_after < len(events), "the kill must land mid-stream"

        second = spawn_consumer(env, second_log)
        try:
            runs = await eventually(lambda: _all(temporal_client, worker_bridge.task_queue, len(events)),
                                    timeout_seconds=120, message="every journey to start")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        assert set(runs) == {f"journey:post_purchase:{e['customer']['id']}:{e['payload']['order_id']}" for e in events}
        assert all(count == 1 for count in runs.values())
        # A start the killed process made but never logged or committed is redelivered and deduped.
        started = _count_in(first_log, "journey_started") + _count_in(second_log, "journey_started")
        deduped = _count_in(second_log, "journey_deduped")
        assert _count_in(second_log, "journey_started") > 0
        assert started <= len(events) <= started + deduped
        assert second.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
        await worker_bridge.stop()


async def _all(client: Client, task_queue: str, expected: int) -> dict[str, int] | None:
    runs = await workflow_runs(client, task_queue)
    return runs if len(runs) >= expected else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
async def test_temporal_down_for_20_seconds_loses_nothing_and_dead_letters_nothing(
        kafka_config: dict[str, str], topic: str, tmp_path: Path, unique: str) -> None:
    server = TemporalDevServer(tmp_path / "temporal", port=_free_port(), ui_port=None,
                               search_attributes=SEARCH_ATTRIBUTES)
    await asyncio.to_thread(server.start)
    bridge: Bridge | None = None
    try:
        client = await Client.connect(server.address)
        bridge = await start_bridge(kafka_config=kafka_config, client=client, topic=topic,
                                    outbox=tmp_path / "outbox.jsonl", suffix=unique)
        before = [samples.purchase(samples.customer()) for _ in range(20)]
        during = [samples.purchase(samples.customer()) for _ in range(40)]
        await bridge.publish(*before)
        await eventually(lambda: bridge.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) == 20,
                         message="the first events")

        await asyncio.to_thread(server.stop)
        await bridge.publish(*during)
        await asyncio.sleep(20)
        retries = bridge.metric("eventflow_retries_total", {"operation": "temporal"})
        assert retries > 0, "the consumer must have retried while Temporal was down"
        assert bridge.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) == 20
        await asyncio.to_thread(server.start)

        await eventually(lambda: bridge.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) == 60,
                         timeout_seconds=90, message="consumption to resume by itself")
        sent_orders = {str(m["workflow_id"]).rsplit(":", 1)[-1] for m in await eventually(
            lambda: len(bridge.sent()) >= 60 and bridge.sent(), timeout_seconds=60, message="all emails")}
        assert sent_orders == {e["payload"]["order_id"] for e in before + during}
        assert bridge.metric("eventflow_dead_letters_total", {"topic": topic, "error_type": "TemporalRejectedError"}) == 0
        assert read_topic(kafka_config, f"{topic}.dlq", expected=1, timeout_seconds=3) == []
    finally:
        if bridge is not None:
            await bridge.stop()
        await asyncio.to_thread(server.stop)


@pytest.mark.slow
async def test_kill_9_mid_stream_dead_letters_each_poison_record_exactly_once(
        kafka_config: dict[str, str], temporal_client: Client, endpoints: object, topic: str, tmp_path: Path,
        unique: str) -> None:
    import subprocess
    import sys

    from consumer.dead_letter import parse_dead_letter_headers
    from tests.harness import committed_behind

    env = consumer_env(kafka_config, temporal_client.service_client.config.target_host, topic, unique)
    poison = [b"\x7bpoison " + str(i).encode() for i in range(100)]
    first_log, second_log = tmp_path / "consumer-1.log", tmp_path / "consumer-2.log"
    first = spawn_consumer(env, first_log)
    try:
        producer = EventProducer(kafka_config, topic, load_schemas())
        # The kill lands mid-stream by construction, not by racing a fast consumer: it sees only the
        # first half, and the second half is published after it died.
        half = len(poison) // 2
        for index, value in enumerate(poison[:half]):
            producer.send_raw(value, key=str(index % 7).encode())
        await producer.flush_async()
        await eventually(lambda: _count_in(first_log, "event_dead_lettered") >= 30, timeout_seconds=60,
                         message="the first consumer to be dead-lettering")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        for index, value in enumerate(poison[half:], start=half):
            producer.send_raw(value, key=str(index % 7).encode())
        await producer.flush_async()

        second = spawn_consumer(env, second_log)
        try:
            await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                             timeout_seconds=120, message="the second consumer to commit past every record")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=len(poison) + 1, timeout_seconds=5)
        sources = [parse_dead_letter_headers(m.headers())["source_offset"] + ":" +
                   parse_dead_letter_headers(m.headers())["source_partition"] for m in dead]
        assert len(dead) == len(poison), f"{len(dead) - len(set(sources))} written twice"
        assert len(set(sources)) == len(poison)
        assert sorted(m.value() or b"" for m in dead) == sorted(poison)
        # The records the killed consumer dead-lettered but never committed were found, not rewritten.
        assert _count_in(second_log, "dead_letter_deduplicated") > 0

        inspect = subprocess.run([sys.executable, "-m", "eventflow.cli", "dlq", "inspect", "--limit", "1"], env=env,
                                 capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
        assert f"{len(poison)} dead letters in {topic}.dlq" in inspect.stdout, inspect.stdout + inspect.stderr
    finally:
        if first.poll() is None:
            first.kill()
