"""Goals, holdouts, control arms and delivery waits: validated with file:line, snapshotted, routed."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeys.goals import Goal
from journeys.model import decode_snapshot
from journeys.routing import Router, SignalJourney, StartJourney
from journeys.steps import SendStep, SplitStep, WaitForStep
from tests.journeys.test_validation import GOOD, _line, _problems
from tests.workflows.journey_harness import compile_journey, event, purchase

MEASURED = """\
id: demo
version: 1
trigger:
  event: PurchaseCompleted
entry:
  rule: once_per_key
  key: payload.order_id
holdout_percent: 10
goal:
  event: OrderShipped
  filter: "payload.carrier == 'UPS'"
  within: 3d
  after: hello
steps:
  - id: hello
    send: {channel: email, template: note, fallback: sms, fallback_within: 2h}
  - id: wait_open
    wait_for:
      send: hello
      outcome: opened
      timeout: 2d
      timed_out:
        - id: nudge
          send: {channel: sms, template: note}
  - id: ab
    split:
      variants:
        - {name: a, percent: 50, steps: [{id: mail_a, send: {channel: email, template: note}}]}
        - {name: ctl, percent: 50, control: true, steps: []}
"""


def test_a_measured_journey_validates_and_its_snapshot_round_trips(tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, MEASURED)
    decoded = decode_snapshot(snapshot)

    assert decoded.goal == Goal("OrderShipped", "3d", key_path="payload.order_id", when="payload.carrier == 'UPS'",
                                after="hello")
    assert decoded.holdout_percent == 10
    hello, wait, split = decoded.steps
    assert isinstance(hello, SendStep) and hello.send.fallback_within == "2h"
    assert isinstance(wait, WaitForStep) and (wait.send, wait.outcome, wait.event) == ("hello", "opened", "")
    assert isinstance(split, SplitStep) and [v.control for v in split.variants] == [False, True]
    assert snapshot["steps"][1]["wait_for"] == {"timeout": "2d", "send": "hello", "outcome": "opened",
                                                "timed_out": [{"id": "nudge", "send": {"channel": "sms",
                                                                                        "template": "note"}}]}


def test_journeys_without_the_new_options_keep_their_snapshot_and_hash(tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path, GOOD)
    assert "goal" not in snapshot and "holdout_percent" not in snapshot
    assert decode_snapshot(snapshot).goal is None and decode_snapshot(snapshot).holdout_percent == 0
    # An old snapshot (format 1, no goal keys) still decodes.
    old = {k: v for k, v in snapshot.items() if k != "format"}
    assert decode_snapshot(old).goal is None


def test_goal_events_are_routed_to_the_instance_by_its_key(tmp_path: Path) -> None:
    snapshot = compile_journey(tmp_path / "a", MEASURED)
    from journeys.loader import validate_folder

    (definition,) = validate_folder(tmp_path / "a").definitions
    router = Router([definition])
    trigger = purchase(customer_id="cust-9", order_id="ord-9")
    (start,) = router.route(trigger)
    shipped = event("OrderShipped", {"order_id": "ord-9", "carrier": "UPS", "tracking_number": "1Z",
                                     "estimated_delivery_at": None}, customer_id="cust-9")

    assert isinstance(start, StartJourney) and start.snapshot == snapshot
    assert router.route(shipped) == [SignalJourney(start.workflow_id, "demo")]


@pytest.mark.parametrize(("broken", "needle", "message"), [
    (MEASURED.replace("      send: hello\n", "      send: nudge\n"), "send: nudge", "comes after this wait"),
    (MEASURED.replace("      send: hello\n", "      send: ab\n"), "send: ab", "is not a send or digest step"),
    (MEASURED.replace("      outcome: opened\n", ""), "wait_for:", "dependency"),
    (MEASURED.replace("      outcome: opened\n", "      outcome: read\n"), "outcome: read", "is not one of"),
    (MEASURED.replace("      outcome: opened\n", "      outcome: opened\n      event: OrderShipped\n"),
     "wait_for:", "has more than one of event, send"),
    (MEASURED.replace("      outcome: opened\n", "      outcome: opened\n      when: \"true\"\n"),
     "when: \"true\"", "only goes with event"),
    (MEASURED.replace("fallback: sms, fallback_within: 2h", "fallback_within: 2h"), "fallback_within",
     "fallback_within only goes with a fallback channel"),
    (MEASURED.replace("fallback_within: 2h", "fallback_within: 99999999999h"), "fallback_within",
     "longer than the maximum"),
    (MEASURED.replace("control: true, steps: []", "control: true, steps: [{id: x, exit: {}}]"), "control: true",
     "control variant 'ctl' receives nothing"),
    (MEASURED.replace("  after: hello\n", "  after: wait_open\n"), "after: wait_open", "is not a send or digest"),
    (MEASURED.replace("  event: OrderShipped\n", "  event: OrderShiped\n"), "event: OrderShiped",
     "unknown event type 'OrderShiped'"),
    (MEASURED.replace("payload.carrier == 'UPS'", "payload.carier == 'UPS'"), "filter:", "has no field 'carier'"),
    (MEASURED.replace("  within: 3d\n", "  within: 3 days\n"), "within: 3 days",
     "goal.within: '3 days' is not a duration: use a number and a unit, e.g. 10m"),
    (MEASURED.replace("  within: 3d\n", "  within: 3d\n  key: customer.email\n"), "key: customer.email",
     "key 'customer.email' is a contact point"),
    (MEASURED.replace("holdout_percent: 10", "holdout_percent: 80"), "holdout_percent", "maximum"),
    (MEASURED.replace("rule: once_per_key", "rule: every_time"), "rule: every_time", "every_time journeys cannot"),
    (MEASURED.replace("goal:\n  event: OrderShipped\n  filter: \"payload.carrier == 'UPS'\"\n  within: 3d\n  after: hello\n",
                      ""), "holdout_percent", "holdout_percent without a goal"),
    (MEASURED.replace("goal:\n  event: OrderShipped\n  filter: \"payload.carrier == 'UPS'\"\n  within: 3d\n  after: hello\n",
                      "").replace("holdout_percent: 10\n", ""), "    split:", "a control variant without a goal"),
])
def test_problems_with_the_new_options_name_the_file_and_line(tmp_path: Path, broken: str, needle: str,
                                                              message: str) -> None:
    assert broken != MEASURED
    problems = _problems(tmp_path, broken)

    assert problems, "expected a problem"
    first = problems[0]
    assert message in first.message, first
    assert first.line == _line(broken, needle), (str(first), needle)


def test_a_published_catalog_snapshot_keeps_its_goal_and_routes_goal_events(tmp_path: Path) -> None:
    from journeys.catalog import definition_from_snapshot

    snapshot = compile_journey(tmp_path, MEASURED)
    published = definition_from_snapshot(snapshot)
    trigger = purchase(customer_id="cust-9", order_id="ord-9")
    shipped = event("OrderShipped", {"order_id": "ord-9", "carrier": "UPS", "tracking_number": "1Z",
                                     "estimated_delivery_at": None}, customer_id="cust-9")
    (start,) = Router([published]).route(trigger)

    assert (published.goal, published.holdout_percent) == (decode_snapshot(snapshot).goal, 10)
    assert isinstance(start, StartJourney) and start.snapshot == snapshot
    assert Router([published]).route(shipped) == [SignalJourney(start.workflow_id, "demo")]
