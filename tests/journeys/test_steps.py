"""The typed step model agrees with the published schema, and a new option needs one field plus one schema entry."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from journeys import _yaml, loader
from journeys._yaml import load_located
from journeys.model import SNAPSHOT_FORMAT, SnapshotFormatError, decode_snapshot
from journeys.steps import (
    STEP_CLASSES,
    BranchCase,
    BranchStep,
    DelayStep,
    DigestStep,
    ExitStep,
    OnCap,
    OnWebhookFailure,
    QuietHours,
    SecretHeader,
    SendOptions,
    SendStep,
    SplitStep,
    SplitVariant,
    StepKind,
    WaitForStep,
    WebhookMethod,
    WebhookRetry,
    WebhookStep,
    decode_step,
    document_key,
    encode_step,
    flow,
    walk,
)
from tests.workflows.journey_harness import compile_journey


def _schema_options(kind: StepKind) -> set[str]:
    step_schema = loader.journey_schema()["$defs"]["step"]["properties"][kind.value]
    return set(step_schema.get("properties", {}))


def _document_keys(cls: type[Any]) -> set[str]:
    return {document_key(f) for f in dataclasses.fields(cls) if f.name != "id"}


@pytest.mark.parametrize("kind", list(StepKind))
def test_each_step_class_has_exactly_the_options_the_schema_publishes(kind: StepKind) -> None:
    cls = SendOptions if kind is StepKind.SEND else STEP_CLASSES[kind]

    assert _document_keys(cls) == _schema_options(kind)


def test_nested_records_match_the_schema_too() -> None:
    steps = loader.journey_schema()["$defs"]["step"]["properties"]

    assert _document_keys(BranchCase) == set(steps["branch"]["properties"]["cases"]["items"]["properties"])
    assert _document_keys(SplitVariant) == set(steps["split"]["properties"]["variants"]["items"]["properties"])
    assert _document_keys(SendOptions) == set(steps["digest"]["properties"]["send"]["properties"])
    webhook = steps["webhook"]["properties"]
    assert _document_keys(SecretHeader) == set(webhook["headers"]["items"]["properties"])
    assert _document_keys(WebhookRetry) == set(webhook["retry"]["properties"])


EVERY_OPTION = (
    SendStep("s", SendOptions("sms", "note", fallback="email", quiet_hours=QuietHours(""), daily_cap=2,
                              on_cap=OnCap.DEFER)),
    SendStep("s2", SendOptions("email", "note", quiet_hours=QuietHours("22:00-07:00"))),
    DelayStep("d", until_local_time="10:00", after="1d"),
    DelayStep("d2", until="payload.at", offset="-1d"),
    BranchStep("b", cases=(BranchCase("true", (ExitStep("e1", reason="r"),)),), otherwise=(ExitStep("e2"),)),
    WaitForStep("w", event="OrderShipped", timeout="2d", key="payload.order_id", when="true",
                received=(ExitStep("e3"),), timed_out=(ExitStep("e4"),)),
    SplitStep("x", variants=(SplitVariant("A", 40, (ExitStep("e5"),)), SplitVariant("B", 60))),
    DigestStep("g", event="OrderShipped", window="1d", send=SendOptions("email", "digest"), key="payload.order_id",
               when="true", min_events=3),
    ExitStep("z", reason="done"),
    WebhookStep("h", url="https://crm.example.com/c/{{ customer.id }}", method=WebhookMethod.PUT,
                headers=(SecretHeader("Authorization", "crm_token"),), body='{"a": 1}', timeout="5s",
                retry=WebhookRetry(max_attempts=3, initial_interval="2s", max_interval="10s"), max_response_bytes=10,
                save_as="crm", on_failure=OnWebhookFailure.EXIT),
    BranchStep("b2", cases=(BranchCase("true", (WebhookStep("h2", url="http://x.example.com/"),)),)),
)


@pytest.mark.parametrize("step", EVERY_OPTION, ids=[s.id for s in EVERY_OPTION])
def test_steps_round_trip_through_their_document_form(step: Any) -> None:
    document = encode_step(step)

    assert decode_step(document) == step
    assert decode_step(copy.deepcopy(document)) == step


def test_defaults_are_left_out_and_false_quiet_hours_means_none() -> None:
    assert encode_step(SendStep("s", SendOptions("sms", "note"))) == {"id": "s", "send": {"channel": "sms",
                                                                                          "template": "note"}}
    step = decode_step({"id": "s", "send": {"channel": "sms", "template": "note", "quiet_hours": False}})
    assert isinstance(step, SendStep) and step.send.quiet_hours == QuietHours("") and step.send.quiet_hours.ignored
    assert decode_step({"id": "e", "exit": None}) == ExitStep("e")


def test_flow_follows_arms_back_to_the_step_after_their_owner() -> None:
    tree = (EVERY_OPTION[4], ExitStep("after"))
    compiled = flow(tree)

    assert compiled.first == "b"
    assert compiled.following["e1"] == "after" and compiled.following["e2"] == "after"
    assert [s.id for s, _ in walk(tree)] == ["b", "e1", "e2", "after"]


def test_unknown_snapshot_formats_are_refused() -> None:
    with pytest.raises(SnapshotFormatError, match="format 99"):
        decode_snapshot({"format": 99, "id": "x", "version": 1, "steps": []})


WITH_NEW_OPTION = """
id: jittered
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: every_time}
steps:
  - id: pause
    delay: {duration: 1h, jitter: 5m}
  - id: hello
    send: {channel: email, template: note}
"""


def test_a_new_option_needs_one_typed_field_and_one_schema_entry(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # What a contributor adds: a field with a default on the kind's class ...
    jittered = dataclasses.make_dataclass("DelayStep", [("jitter", "str | None", dataclasses.field(default=None))],
                                          bases=(DelayStep,), frozen=True)
    monkeypatch.setitem(STEP_CLASSES, StepKind.DELAY, jittered)
    # ... and its entry in journey.schema.json.
    schema = copy.deepcopy(loader.journey_schema())
    schema["$defs"]["step"]["properties"]["delay"]["properties"]["jitter"] = {"type": "string"}
    monkeypatch.setattr(loader, "journey_schema", lambda: schema)

    # The rest follows: validation, the typed definition, the snapshot, and what an instance decodes.
    snapshot = compile_journey(tmp_path, WITH_NEW_OPTION)
    assert snapshot["format"] == SNAPSHOT_FORMAT
    assert snapshot["steps"][0] == {"id": "pause", "delay": {"duration": "1h", "jitter": "5m"}}
    pause = decode_snapshot(snapshot).steps[0]
    assert isinstance(pause, DelayStep) and getattr(pause, "jitter") == "5m"  # noqa: B009 - a field only newer steps declare
    assert _document_keys(jittered) == _schema_options(StepKind.DELAY)


LISTENING = """
id: listening
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: once_per_key, key: payload.order_id}
steps:
  - id: wait_ship
    wait_for: {event: OrderShipped, timeout: 2d}
"""


def test_the_loader_resolves_listener_keys_into_typed_steps_without_touching_the_document(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[Any] = []

    def keeping(text: str) -> Any:
        document = load_located(text)
        read.append(document)
        return document

    monkeypatch.setattr(_yaml, "load_located", keeping)
    snapshot = compile_journey(tmp_path, LISTENING)

    (wait,) = decode_snapshot(snapshot).steps
    assert isinstance(wait, WaitForStep) and wait.key == "payload.order_id"
    definition_documents = [d for d in read if isinstance(d.data, dict) and d.data.get("id") == "listening"]
    assert definition_documents and all(d.data == load_located(LISTENING).data for d in definition_documents)
    assert "key" not in definition_documents[0].data["steps"][0]["wait_for"]
