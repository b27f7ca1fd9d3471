"""Recorded interpreter histories replay without non-determinism errors.

The histories in ``histories/`` come from real runs (``python -m tests.workflows.record_histories``)
of the sample journeys and of every step type, including continue-as-new runs. An interpreter
change that would break journeys already running fails here.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from activities.outcomes import SendStatus
from journeys.model import SNAPSHOT_FORMATS, decode_snapshot
from journeys.steps import STEP_KINDS, SendStep, SplitStep, StepKind, WaitForStep, encode_step, walk
from workflows.journey import (
    BORN_WITH,
    JOURNEY_WORKFLOW,
    PENDING_EVENTS_PATCH,
    JourneyInput,
    JourneyState,
    JourneyWorkflow,
)
from workflows.sending import SUPPRESSED_FALLBACK_PATCH, Fallback, SendRecord
from workflows.webhooks import WebhookStatus

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def _start_input(path: Path) -> dict[str, Any]:
    first = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    decoded: dict[str, Any] = json.loads(base64.b64decode(first["input"]["payloads"][0]["data"]))
    return decoded


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_histories_cover_the_samples_and_every_step_type() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"post_purchase-0-run0", "abandoned_cart-0-run0", "welcome_series-0-run0",
            "continue_as_new-0-run1"} <= names
    kinds = {step.KIND.value for path in HISTORIES
             for step, _ in walk(decode_snapshot(_start_input(path)["journey"]).steps)}
    assert kinds == set(STEP_KINDS)
    continued = [_start_input(p) for p in HISTORIES if p.stem == "continue_as_new-0-run1"]
    assert continued[0]["state"]["cursor"], "the second run resumes at a carried position"


def test_histories_hold_every_snapshot_format_and_each_decodes() -> None:
    snapshots = [_start_input(path)["journey"] for path in HISTORIES]

    assert {s.get("format", 1) for s in snapshots} == set(SNAPSHOT_FORMATS)
    for snapshot in snapshots:
        decoded = decode_snapshot(snapshot)
        assert decoded.id == snapshot["id"] and decoded.steps
        if snapshot.get("format", 1) >= 2:
            assert [encode_step(step) for step in decoded.steps] == snapshot["steps"]


def test_carried_send_records_of_older_runs_decode_into_status_and_error_type() -> None:
    converter = DataConverter.default.payload_converter
    old = {"step_id": "s", "channel": "sms", "template_id": "t", "status": "failed:InvalidAddress",
           "provider": "", "provider_message_id": None, "fallback_from": None}
    (payload,) = converter.to_payloads([[old, {**old, "status": "skipped:journey_exited"}, {**old, "status": "sent"}]])
    failed, skipped, sent = converter.from_payloads([payload], [list[SendRecord]])[0]

    assert (failed.status, failed.error_type, failed.outcome) == (SendStatus.FAILED, "InvalidAddress",
                                                                  "failed:InvalidAddress")
    assert (skipped.status, skipped.error_type) == (SendStatus.SKIPPED, "journey_exited")
    assert (sent.status, sent.error_type) == (SendStatus.SENT, "")


def test_carried_trail_webhooks_and_fallbacks_of_older_runs_decode_typed_and_encode_as_before() -> None:
    converter = DataConverter.default.payload_converter
    old = {"cursor": "next", "context": {},
           "trail": [{"step_id": "welcome", "kind": "send", "at": "2024-01-01T00:00:00+00:00", "note": ""}],
           "webhooks": [{"step_id": "crm", "status": "failed", "status_code": 0, "error_type": "HttpStatusError"},
                        {"step_id": "crm2", "status": "ok", "status_code": 200, "error_type": ""}],
           "sends": [{"step_id": "welcome", "channel": "email", "template_id": "t", "status": "sent",
                      "fallback_from": "sms:failed:InvalidAddress", "error_type": ""}]}
    (payload,) = converter.to_payloads([old])
    [state] = converter.from_payloads([payload], [JourneyState])

    assert state.trail[0].kind is StepKind.SEND
    assert [w.status for w in state.webhooks] == [WebhookStatus.FAILED, WebhookStatus.OK]
    assert all(isinstance(w.status, WebhookStatus) for w in state.webhooks)
    assert state.sends[0].fallback == Fallback("sms", "failed:InvalidAddress")
    # What new runs carry reads the same on the wire, so workers of the previous release decode it too.
    again = json.loads(converter.to_payloads([state])[0].data)
    assert again["trail"] == old["trail"] and again["webhooks"] == old["webhooks"]
    assert again["sends"][0]["fallback_from"] == "sms:failed:InvalidAddress"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    result = await Replayer(workflows=[JourneyWorkflow]).replay_workflow(_history(path))

    assert result.replay_failure is None


@workflow.defn(name=JOURNEY_WORKFLOW)
class _IncompatibleJourney:
    """An interpreter that waits before it sends: what a careless change to the run loop looks like."""

    @workflow.run
    async def run(self, start: JourneyInput) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_an_incompatible_interpreter_fails_replay() -> None:
    (path,) = [p for p in HISTORIES if p.stem == "post_purchase-0-run0"]

    # Unsandboxed: the sandbox would re-import this test module, which reads files at import time.
    result = await Replayer(workflows=[_IncompatibleJourney], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(
        _history(path), raise_on_replay_failure=False)

    assert result.replay_failure is not None


def test_histories_cover_goals_holdouts_control_arms_and_delivery_waits() -> None:
    snapshots = [_start_input(path)["journey"] for path in HISTORIES]
    steps = [step for s in snapshots for step, _ in walk(decode_snapshot(s).steps)]

    assert any(s.get("goal") for s in snapshots) and any(s.get("holdout_percent") for s in snapshots)
    assert any(isinstance(step, WaitForStep) and step.send is not None for step in steps)
    assert any(isinstance(step, SendStep) and step.send.fallback_within for step in steps)
    assert any(isinstance(step, SplitStep) and any(v.control for v in step.variants) for step in steps)
    assert "journey-goals-delivery-waits" in set().union(*(_patches(path) for path in HISTORIES))


def _patches(path: Path) -> set[str]:
    return {json.loads(base64.b64decode(payload["data"]))["id"]
            for e in json.loads(path.read_text())["events"] if "markerRecordedEventAttributes" in e
            for payload in e["markerRecordedEventAttributes"]["details"]["patch-data"]["payloads"]}


@pytest.mark.parametrize(("before_prefix", "scenario", "patch"), [
    ("before-pending-", "event_with_start", PENDING_EVENTS_PATCH),
    ("before-suppressed-", "suppressed_fallback", SUPPRESSED_FALLBACK_PATCH)])
def test_histories_hold_a_changed_behaviour_recorded_before_and_after_its_patch(
        before_prefix: str, scenario: str, patch: str) -> None:
    before = [p for p in HISTORIES if p.stem.startswith(before_prefix + scenario)]
    after = [p for p in HISTORIES if p.stem.startswith(scenario)]

    assert before and after
    assert all(patch not in _patches(p) for p in before)
    assert all(patch in _patches(p) for p in after)


def test_journeys_born_with_every_patch_record_no_marker_and_replay_beside_older_ones() -> None:
    born = [p for p in HISTORIES if p.stem.startswith("born-")]
    asked = set().union(*(_patches(p) for p in HISTORIES))

    assert len(born) >= 20 and asked <= set(BORN_WITH)  # every patch recorded is one new journeys are born with
    for path in HISTORIES:
        if path.stem.startswith("born-"):
            kinds = {e["eventType"] for e in json.loads(path.read_text())["events"]}
            assert _start_input(path)["born_with"] == list(BORN_WITH)
            assert not _patches(path) and "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES" not in kinds
