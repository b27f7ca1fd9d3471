"""``eventflow journeys report``: a 20 % holdout and two arms, a few hundred customers, exact counts.

Runs on the dev server (the report reads Temporal visibility). Customers are started through
the consumer's router and dispatcher in parallel batches (not through Kafka: the Kafka path of
goal events has its own small test), then get scripted delivery reports and conversion or exit
events; the report must count exactly what the test did.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities.outcomes import DELIVERY_SIGNAL, DeliveryOutcome, DeliveryReport
from consumer.dispatch import Dispatcher
from eventflow.cli import main
from eventflow.commands.journeys import _report_lines
from events.model import Customer, CustomerEvent
from journeys.goals import Progress, is_held_out
from journeys.loader import validate_folder
from journeys.report import InstanceView, build, format_report
from journeys.routing import Router, SignalJourney, StartJourney
from journeys.stats import Rate
from tests.harness import eventually
from tests.workflows.journey_harness import Capture, compile_journey, worker
from workflows.journey import STATUS_QUERY, JourneyStatus, split_bucket

CUSTOMERS = 200
#: Scripted conversion: customer number n converts when n % 10 is below its arm's tenths.
CONVERTS_TENTHS = {"holdout": 1, "a": 4, "b": 2}

JOURNEY = """
id: {journey_id}
version: 3
trigger: {{event: UserSignedUp}}
entry: {{rule: once}}
holdout_percent: 20
goal: {{event: PurchaseCompleted, within: 7d, filter: "payload.total.amount > 0"}}
exit:
  - event: OrderRefunded
steps:
  - id: offer
    split:
      variants:
        - {{name: a, percent: 50, steps: [{{id: mail_a, send: {{channel: email, template: note}}}}]}}
        - {{name: b, percent: 50, steps: [{{id: text_b, send: {{channel: sms, template: note}}}}]}}
"""


@dataclass(frozen=True)
class Planned:
    """One generated customer and what the test does with it."""

    number: int
    customer_id: str
    arm: str
    converts: bool
    opened: bool


def _event(event_type: str, customer_id: str, payload: dict[str, Any]) -> CustomerEvent:
    return CustomerEvent(event_id=str(uuid.uuid4()), event_type=event_type, occurred_at="2026-05-04T08:00:00+00:00",
                         customer=Customer(id=customer_id, email="kim@example.com", phone="+15555550123"),
                         payload=payload)


def _plan(journey_id: str) -> list[Planned]:
    plans = []
    for number in range(CUSTOMERS):
        customer_id = f"rpt-{journey_id}-{number}"
        held = is_held_out(journey_id, customer_id, 20)
        arm = "holdout" if held else ("a" if split_bucket(journey_id, customer_id) < 50 else "b")
        plans.append(Planned(number, customer_id, arm, converts=number % 10 < CONVERTS_TENTHS[arm],
                             opened=not held and number % 3 == 0))
    return plans


async def _in_batches(call: Callable[[Planned], Awaitable[None]], plans: Sequence[Planned], size: int = 50) -> None:
    for offset in range(0, len(plans), size):
        await asyncio.gather(*(call(plan) for plan in plans[offset:offset + size]))


@pytest.mark.timeout(120)
async def test_report_counts_exactly_what_the_customers_did(
        temporal_client: Client, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoints: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    journey_id = f"rpt_{unique}"
    compile_journey(tmp_path, JOURNEY.format(journey_id=journey_id))
    (definition,) = validate_folder(tmp_path).definitions
    router = Router([definition])
    plans = _plan(journey_id)
    task_queue = f"test-report-{unique}"
    dispatcher = Dispatcher(temporal_client, task_queue)
    capture = Capture()
    ids: dict[str, str] = {}

    async def enter(plan: Planned) -> None:
        trigger = _event("UserSignedUp", plan.customer_id, {"signup_source": "web", "marketing_opt_in": True})
        (action,) = router.route(trigger)
        assert isinstance(action, StartJourney)
        ids[plan.customer_id] = action.workflow_id
        await dispatcher.apply(trigger, action)

    async def at_goal_wait(plan: Planned) -> None:
        handle = temporal_client.get_workflow_handle(ids[plan.customer_id])

        async def waiting() -> bool:
            status = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
            return status.current_step is None and status.waiting_until is not None

        await eventually(waiting, timeout_seconds=60, message=f"{plan.customer_id} waiting for its goal")

    async def script(plan: Planned) -> None:
        handle = temporal_client.get_workflow_handle(ids[plan.customer_id])
        if plan.opened:
            step = "mail_a" if plan.arm == "a" else "text_b"
            await handle.signal(DELIVERY_SIGNAL, DeliveryReport(
                idempotency_key=f"{handle.id}/{step}", customer_id=plan.customer_id,
                channel="email" if plan.arm == "a" else "sms", provider="test", outcome=DeliveryOutcome.OPENED,
                at="2026-05-04T08:01:00+00:00", workflow_id=handle.id, step_id=step, report_id=f"r-{plan.number}"))
        if plan.converts:
            follow = _event("PurchaseCompleted", plan.customer_id, {
                "order_id": f"o-{plan.number}", "cart_id": None, "items": [],
                "total": {"amount": "10.00", "currency": "EUR"}})
        else:
            follow = _event("OrderRefunded", plan.customer_id, {
                "order_id": f"o-{plan.number}", "reason": None, "amount": {"amount": "1.00", "currency": "EUR"}})
        (action,) = router.route(follow)  # goal events reach the instance as the consumer routes them
        assert isinstance(action, SignalJourney) and action.workflow_id == handle.id
        await dispatcher.apply(follow, action)
        await handle.result()

    async with worker(temporal_client, task_queue, capture):
        await _in_batches(enter, plans)
        await _in_batches(at_goal_wait, plans)
        await _in_batches(script, plans)

    last: list[str] = []

    async def reported() -> list[str]:
        last[:] = await _report_lines(journey_id)
        return last if last[0].startswith(f"journey {journey_id} (versions 3): {CUSTOMERS} instances, 0 running") \
            else []

    try:
        await eventually(reported, timeout_seconds=30, message="every instance in visibility")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the report said: {last[0]} ... {last[-1]}") from exc
    assert await asyncio.to_thread(main, ["journeys", "report", journey_id]) == 0
    out = capsys.readouterr().out.splitlines()

    by_arm = {arm: [p for p in plans if p.arm == arm] for arm in CONVERTS_TENTHS}
    converted = {arm: sum(p.converts for p in group) for arm, group in by_arm.items()}
    treated = by_arm["a"] + by_arm["b"]
    assert len(capture.sent) == len(treated)  # the holdout received nothing
    held = len(by_arm["holdout"])
    assert out[0] == f"journey {journey_id} (versions 3): {CUSTOMERS} instances, 0 running, {held} held out"
    funnel = dict(line.split() for line in out[out.index("funnel") + 1:out.index("steps") - 1])
    assert funnel == {"entered": str(CUSTOMERS), "sent": str(len(treated)), "delivered": str(sum(p.opened for p in plans)),
                      "opened": str(sum(p.opened for p in plans)), "clicked": "0",
                      "converted": str(sum(converted.values())),
                      "exited": str(sum(not p.converts for p in plans))}
    steps = {line.split()[0]: line.split()[1:] for line in out[out.index("steps") + 2:] if line.startswith("  ")
             and line.split()[0] in ("offer", "mail_a", "text_b")}
    opened = {arm: sum(p.opened for p in by_arm[arm]) for arm in ("a", "b")}
    assert steps == {"offer": [str(CUSTOMERS), "0", "0", "0", "0"],
                     "mail_a": [str(len(by_arm["a"]) + sum(1 for p in by_arm["holdout"]
                                                           if split_bucket(journey_id, p.customer_id) < 50)),
                                str(len(by_arm["a"])), str(opened["a"]), str(opened["a"]), "0"],
                     "text_b": [str(len(by_arm["b"]) + sum(1 for p in by_arm["holdout"]
                                                           if split_bucket(journey_id, p.customer_id) >= 50)),
                                str(len(by_arm["b"])), str(opened["b"]), str(opened["b"]), "0"]}
    arms = {line.split()[0]: line.split()[1:3] for line in out[out.index("steps"):] if line.startswith("  ")
            and line.split()[0] in ("holdout", "treated", "offer=a", "offer=b")}
    assert arms == {"holdout": [str(held), str(converted["holdout"])],
                    "treated": [str(len(treated)), str(converted["a"] + converted["b"])],
                    "offer=a": [str(len(by_arm["a"])), str(converted["a"])],
                    "offer=b": [str(len(by_arm["b"])), str(converted["b"])]}
    # Each arm is compared with the holdout (the split has no control), with its lift.
    assert all(" holdout " in line for line in out if line.startswith(("  offer=a", "  offer=b", "  treated")))
    assert 0.1 < held / CUSTOMERS < 0.3


def _view(holdout: bool = False, converted: bool = False, variants: dict[str, str] | None = None,
          control: list[str] | None = None) -> InstanceView:
    progress = Progress(holdout=holdout, converted_at="2026-01-01T00:00:00+00:00" if converted else None,
                        control=control or [], reached=["offer"])
    return InstanceView(version=1, progress=progress, variants=variants or {})


def test_split_arms_are_compared_with_their_control_when_there_is_one() -> None:
    instances = ([_view(variants={"offer": "a"}, converted=n < 30) for n in range(100)]
                 + [_view(variants={"offer": "ctl"}, control=["offer"], converted=n < 20) for n in range(100)]
                 + [_view(holdout=True, variants={"offer": "a"}, converted=n < 5) for n in range(50)])

    report = build("j", instances)

    arms = {arm.name: arm for arm in report.arms}
    assert arms["offer=a"].baseline == "offer=ctl" and arms["offer=a"].rate == Rate(30, 100)
    comparison = arms["offer=a"].comparison
    assert comparison is not None and comparison.lift is not None and round(comparison.lift, 6) == 0.5
    assert arms["offer=ctl (control)"].rate == Rate(20, 100) and arms["offer=ctl (control)"].baseline is None
    assert arms["treated"].rate == Rate(50, 200) and arms["holdout"].rate == Rate(5, 50)
    lines = format_report(report)
    (row,) = [line for line in lines if line.startswith("  offer=a ")]
    assert "30.0%" in row and "offer=ctl" in row and "+10.0 pp" in row and "+50.0%" in row


def test_status_lines_show_arm_and_conversion() -> None:
    from eventflow.commands.journeys import _measurement_lines
    from journeys.goals import DeliveryFact

    progress = Progress(converted_at="2026-05-04T09:00:00+00:00", goal_until="2026-05-11T08:00:00+00:00",
                        delivery=[DeliveryFact("hello", "email", "opened", "2026-05-04T08:30:00+00:00")])
    status = JourneyStatus(journey_id="j", journey_version=1, current_step=None, finished=True, exit_reason=None,
                           variants={"offer": "a"}, progress=progress)
    plain = JourneyStatus(journey_id="j", journey_version=1, current_step=None, finished=True, exit_reason=None)

    assert _measurement_lines(status) == ["    arm offer=a: converted at 2026-05-04T09:00:00+00:00"]
    waiting = replace(status, progress=replace(progress, converted_at=None), variants={})
    assert _measurement_lines(waiting) == ["    arm all: not converted (goal window until 2026-05-11T08:00:00+00:00)"]
    assert _measurement_lines(plain) == []


def test_empty_sections_say_why() -> None:
    lines = format_report(build("j", [_view()], goal_defined=False))
    assert "  (converted stays 0: the journey defines no goal)" in lines
    assert lines[-1].startswith("  (no arms: no instance was held out or took a split variant")
    assert "  (no instance has reached a step yet)" in format_report(build("j", []))
    assert not any("defines no goal" in line for line in format_report(build("j", [_view()], goal_defined=True)))
