"""Delivery waits, late fallbacks, goals, holdouts and control arms on Temporal's time-skipping server.

Delivery reports arrive as the webhook service sends them: a `DeliveryReport` signal
(``DELIVERY_SIGNAL``) to the instance that made the send, naming its step.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from activities.outcomes import DELIVERY_SIGNAL, DeliveryOutcome, DeliveryReport, SendStatus
from devstack import provision
from journeys.goals import HOLDOUT_ARM, holdout_bucket, is_held_out
from tests.workflows.journey_harness import Capture, compile_journey, event, purchase, result, start, worker
from workflows.journey import EVENT_SIGNAL, STATUS_QUERY, JourneyStatus, split_bucket


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
async def queue(time_skipping_env: WorkflowEnvironment, capture: Capture, unique: str) -> AsyncIterator[str]:
    task_queue = f"goals-{unique}"
    async with worker(time_skipping_env.client, task_queue, capture):
        yield task_queue


def report(handle: WorkflowHandle[Any, Any], step_id: str, outcome: DeliveryOutcome, *, channel: str = "email",
           report_id: str | None = None) -> DeliveryReport:
    """A report as the webhook service sends it for one of the instance's sends."""
    return DeliveryReport(
        idempotency_key=f"{handle.id}/{step_id}", customer_id="c", channel=channel,
        provider="sendgrid" if channel == "email" else "twilio", outcome=outcome, at="2026-01-15T10:31:00+00:00",
        workflow_id=handle.id, step_id=step_id, provider_message_id="msg-1",
        report_id=report_id or f"evt-{uuid.uuid4().hex[:8]}")


def signup(customer_id: str | None = None) -> Any:
    return event("UserSignedUp", {"signup_source": "web", "marketing_opt_in": True}, customer_id=customer_id)


NOT_OPENED = """
id: nudge
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
steps:
  - id: welcome
    send: {channel: email, template: note}
  - id: wait_open
    wait_for:
      send: welcome
      outcome: opened
      timeout: 2d
      timed_out:
        - id: sms_nudge
          send: {channel: sms, template: note}
"""


@pytest.mark.parametrize("opened", [True, False], ids=["opened_in_time", "not_opened"])
async def test_not_opened_within_two_days_sends_an_sms(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path, opened: bool) -> None:
    snapshot = compile_journey(tmp_path, NOT_OPENED)
    handle = await start(time_skipping_env.client, queue, snapshot, signup())
    await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", DeliveryOutcome.DELIVERED))
    await time_skipping_env.sleep(timedelta(days=1))
    if opened:
        await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", DeliveryOutcome.OPENED))

    status = await result(handle)

    assert capture.steps(handle.id) == (["welcome"] if opened else ["welcome", "sms_nudge"])
    assert [s.channel for s in capture.sent] == (["email"] if opened else ["email", "sms"])
    assert [f.outcome for f in status.progress.delivery] == (["delivered", "opened"] if opened else ["delivered"])
    assert ("sms_nudge" in status.progress.reached) is not opened


async def test_an_open_reported_before_the_wait_began_counts_and_a_click_implies_it(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    text = NOT_OPENED.replace("  - id: wait_open", "  - id: pause\n    delay: {duration: 1h}\n  - id: wait_open")
    snapshot = compile_journey(tmp_path, text)
    handle = await start(time_skipping_env.client, queue, snapshot, signup())
    await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", DeliveryOutcome.CLICKED))

    status = await result(handle)

    assert capture.steps(handle.id) == ["welcome"]
    assert status.trail[-1].note == "opened"


LATE_BOUNCE = """
id: late
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
steps:
  - id: welcome
    send: {channel: email, template: note, fallback: sms, fallback_within: 1h}
  - id: later
    delay: {duration: 1d}
  - id: after
    send: {channel: whatsapp, template: note}
"""


async def test_a_bounce_reported_later_sends_the_fallback_once(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, LATE_BOUNCE)
    handle = await start(time_skipping_env.client, queue, snapshot, signup())
    await time_skipping_env.sleep(timedelta(minutes=10))
    bounce = report(handle, "welcome", DeliveryOutcome.BOUNCED, report_id="sg-bounce-1")
    await handle.signal(DELIVERY_SIGNAL, bounce)
    await handle.signal(DELIVERY_SIGNAL, bounce)  # the provider retried its callback
    # A report that names its send only by the idempotency key (fallback sends carry "#<channel>").
    await handle.signal(DELIVERY_SIGNAL, replace(report(handle, "welcome", DeliveryOutcome.DELIVERED, channel="sms"),
                                                 step_id="", idempotency_key=f"{handle.id}/welcome#sms"))

    status = await result(handle)

    assert [(s.step_id, s.channel) for s in capture.sent] == [("welcome", "email"), ("welcome", "sms"),
                                                              ("after", "whatsapp")]
    fallback = status.sends[1]
    assert (fallback.channel, fallback.status, fallback.fallback_from) == ("sms", SendStatus.SENT, "email:bounced")
    assert [(f.step_id, f.channel, f.outcome) for f in status.progress.delivery] == [
        ("welcome", "email", "bounced"), ("welcome", "sms", "delivered")]


@pytest.mark.parametrize("outcome", [DeliveryOutcome.DELIVERED, None], ids=["delivered", "no_report"])
async def test_no_fallback_when_delivered_or_when_the_window_passes_quietly(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path,
        outcome: DeliveryOutcome | None) -> None:
    snapshot = compile_journey(tmp_path, LATE_BOUNCE)
    handle = await start(time_skipping_env.client, queue, snapshot, signup())
    if outcome is not None:
        await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", outcome))
    await time_skipping_env.sleep(timedelta(hours=2))
    # Too late: the send stopped listening after fallback_within.
    await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", DeliveryOutcome.BOUNCED))

    await result(handle)

    assert [(s.step_id, s.channel) for s in capture.sent] == [("welcome", "email"), ("after", "whatsapp")]


GOAL = """
id: goal_j
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
holdout_percent: 50
goal:
  event: PurchaseCompleted
  filter: "payload.total.amount > 10"
  within: 3d
  after: welcome
steps:
  - id: pause
    delay: {duration: 1h}
  - id: welcome
    send: {channel: email, template: note}
"""


def _customer(held_out: bool) -> str:
    """A customer id that the journey ``goal_j`` (50 % holdout) does or does not hold out."""
    for number in range(1000):
        candidate = f"goal-cust-{number}"
        if is_held_out("goal_j", candidate, 50) is held_out:
            return f"{candidate}"
    raise AssertionError("no customer found")


@pytest.mark.parametrize("held_out", [False, True], ids=["treated", "holdout"])
async def test_goal_converts_within_its_window_after_the_send_and_holdouts_receive_nothing(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path, held_out: bool) -> None:
    snapshot = compile_journey(tmp_path, GOAL)
    customer = _customer(held_out)
    handle = await start(time_skipping_env.client, queue, snapshot, signup(customer))
    # Before the window opens (the send runs after 1h), a purchase does not convert.
    await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer, amount="99.00"))
    await time_skipping_env.sleep(timedelta(hours=2))
    waiting = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
    assert not waiting.finished and not waiting.converted and waiting.waiting_until
    await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer, amount="5.00"))  # filter says no
    await time_skipping_env.sleep(timedelta(days=1))
    converting = purchase(customer_id=customer, amount="50.00")
    await handle.signal(EVENT_SIGNAL, converting)

    status = await result(handle)

    assert capture.steps(handle.id) == ([] if held_out else ["welcome"])
    assert status.progress.holdout is held_out
    assert status.converted and status.progress.conversion_event_id == converting.event_id
    assert status.progress.converted_at is not None and status.progress.sent_at["welcome"] < status.progress.converted_at
    assert [s.status for s in status.sends] == [SendStatus.SKIPPED if held_out else SendStatus.SENT]


async def test_without_a_conversion_the_instance_ends_when_the_goal_window_closes(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, GOAL)
    customer = _customer(False)
    handle = await start(time_skipping_env.client, queue, snapshot, signup(customer))

    status = await result(handle)
    late = await handle.describe()

    assert not status.converted and status.finished
    assert late.close_time is not None and late.start_time is not None
    assert timedelta(days=3, hours=1) <= late.close_time - late.start_time < timedelta(days=3, hours=2)


SPLIT_CONTROL = """
id: ctl
version: 1
trigger: {event: UserSignedUp}
entry: {rule: once}
goal: {event: PurchaseCompleted, within: 1d}
steps:
  - id: offer
    split:
      variants:
        - {name: a, percent: 50, steps: [{id: send_a, send: {channel: email, template: note}}]}
        - {name: control, percent: 50, control: true, steps: []}
"""


async def test_a_control_arm_receives_nothing_and_its_arm_and_conversion_are_recorded(
        time_skipping_env: WorkflowEnvironment, queue: str, capture: Capture, tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, SPLIT_CONTROL)
    customers = [f"ctl-{n}" for n in range(40)]
    in_control = [c for c in customers if split_bucket("ctl", c) >= 50]
    treated = [c for c in customers if split_bucket("ctl", c) < 50]
    handles = {c: await start(time_skipping_env.client, queue, snapshot, signup(c)) for c in (in_control[0], treated[0])}
    for customer, handle in handles.items():
        await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer))

    control_status = await result(handles[in_control[0]])
    treated_status = await result(handles[treated[0]])

    assert capture.steps(handles[in_control[0]].id) == [] and capture.steps(handles[treated[0]].id) == ["send_a"]
    assert control_status.progress.control == ["offer"] and treated_status.progress.control == []
    assert (control_status.variants, treated_status.variants) == ({"offer": "control"}, {"offer": "a"})
    assert control_status.converted and treated_status.converted


def test_the_holdout_is_stable_and_independent_of_the_split_buckets() -> None:
    customers = [f"cust-{n}" for n in range(4000)]
    held = [c for c in customers if is_held_out("j", c, 20)]
    assert 0.17 < len(held) / len(customers) < 0.23
    assert held == [c for c in customers if holdout_bucket("j", c) < 20]
    # Held-out customers spread over the split buckets as everyone does (independent hashes).
    low_split = sum(1 for c in held if split_bucket("j", c) < 50) / len(held)
    assert 0.44 < low_split < 0.56
    assert HOLDOUT_ARM == "holdout"


async def test_funnel_counters_are_labelled_by_journey_version_step_and_arm(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"127.0.0.1:{port}", counters_total_suffix=True, durations_as_seconds=True)))
    snapshot = compile_journey(tmp_path, GOAL)
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(provision.test_server()),
                                                        runtime=runtime,
                                                        test_server_startup_timeout=provision.TEST_SERVER_STARTUP)
    try:
        async with worker(env.client, "funnel", Capture()):
            for held_out in (False, True):
                customer = _customer(held_out)
                handle = await start(env.client, "funnel", snapshot, signup(customer))
                await env.sleep(timedelta(hours=2))
                await handle.signal(DELIVERY_SIGNAL, report(handle, "welcome", DeliveryOutcome.DELIVERED))
                await handle.signal(EVENT_SIGNAL, purchase(customer_id=customer, amount="50.00"))
                await result(handle)
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    finally:
        await env.shutdown()

    def value(name: str, **labels: str) -> float:
        wanted = {"journey": "goal_j", "version": "1", **labels}
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in wanted.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    # At least once: a workflow task retried after a timeout on a loaded machine counts again.
    for arm in ("all", "holdout"):
        assert value("eventflow_journey_entries_total", arm=arm) >= 1
        assert value("eventflow_journey_assignments_total", arm=arm) >= 1
        assert value("eventflow_journey_steps_total", arm=arm, step="welcome") >= 1
        assert value("eventflow_journey_conversions_total", arm=arm) >= 1
        assert value("eventflow_journey_exits_total", arm=arm, how="completed") >= 1
        assert value("eventflow_journey_delivery_reports_total", arm=arm, step="welcome", outcome="delivered") >= 1
    assert value("eventflow_journey_sends_total", arm="all", step="welcome", channel="email") >= 1
    assert value("eventflow_journey_sends_total", arm="holdout") == 0
    assert "cust" not in "".join(line for line in text.splitlines() if line.startswith("eventflow_journey_"))
