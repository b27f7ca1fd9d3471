"""Validation of goals, holdouts, control arms and delivery waits (called by `journeys.loader`).

Kept apart from the loader so that the measurement options are one module: each problem names
the file and line like every other definition problem. The checks read the typed document.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from journeys._checks import CONTEXT_ROOTS, check_expression, check_key, listener_key, sample_for
from journeys.durations import check_duration
from journeys.goals import Goal
from journeys.model import JourneyDocument, Listener
from journeys.problems import Report
from journeys.steps import DigestStep, SendStep, SplitStep, Step, WaitForStep, options_path, sending, walk

#: Step types whose run can anchor a goal window or be waited on for a delivery report.
_SENDING = (SendStep, DigestStep)


def _duration(report: Report, where: tuple[Any, ...], value: str) -> None:
    try:
        check_duration(value)
    except ValueError as exc:
        report.add(where, f"{where[-1]}: {exc}")


def check_steps(report: Report, steps: tuple[Step, ...]) -> None:
    """Delivery waits name an earlier send step; ``fallback_within`` needs a fallback; control arms are empty."""
    order: dict[str, tuple[int, Step]] = {}
    for index, (step, _) in enumerate(walk(steps)):
        order.setdefault(step.id, (index, step))
    for index, (step, path) in enumerate(walk(steps)):
        match step:
            case SendStep(send=send) | DigestStep(send=send) if send.fallback_within is not None:
                where = options_path(step, path)
                if not send.fallback:
                    report.add((*where, "fallback_within"), "fallback_within only goes with a fallback channel")
                else:
                    _duration(report, (*where, "fallback_within"), send.fallback_within)
            case WaitForStep(send=str() as target):
                found = order.get(target)
                if found is None or not isinstance(found[1], _SENDING):
                    report.add((*path, "wait_for", "send"), f"wait_for.send {target!r} is not a send or digest "
                                                             "step of this journey")
                elif found[0] >= index:
                    report.add((*path, "wait_for", "send"), f"wait_for.send {target!r} comes after this wait; a "
                                                             "delivery wait follows the send it waits on")
                for option, value in (("key", step.key), ("when", step.when)):
                    if value is not None:
                        report.add((*path, "wait_for", option), f"{option} only goes with event, not with a "
                                                                 "delivery wait (send/outcome)")
            case SplitStep(variants=variants):
                for number, variant in enumerate(variants):
                    if variant.control and variant.steps:
                        report.add((*path, "split", "variants", number, "steps"),
                                   f"control variant {variant.name!r} receives nothing: its steps must be empty")


def check_goal(report: Report, document: JourneyDocument, known: Collection[str],
               key_path: str | None) -> tuple[Goal | None, Listener | None]:
    """The journey's goal, its key resolved (None without one), and the listener that routes goal events."""
    written = document.goal
    if written is None:
        if document.holdout_percent:
            report.add(("holdout_percent",), "holdout_percent without a goal: nothing would measure what the "
                                             "held-out customers miss (declare a goal)")
        for step, path in walk(document.steps):
            if isinstance(step, SplitStep) and any(v.control for v in step.variants):
                report.add((*path, "split"), "a control variant without a goal: nothing would measure it "
                                             "(declare a goal)")
        return None, None
    event_type = written.event_type
    if event_type not in known:
        report.add(("goal", "event"), f"unknown event type {event_type!r}")
        return None, None
    sample = sample_for(event_type, known)
    if written.when:
        check_expression(report, ("goal", "filter"), written.when, sample, CONTEXT_ROOTS - {"journey"})
    if written.key_path:
        check_key(report, ("goal", "key"), written.key_path, sample, event_type)
    _duration(report, ("goal", "within"), written.within)
    if written.after is not None:
        anchors = {step.id for step, _ in sending(document.steps)}
        if written.after not in anchors:
            report.add(("goal", "after"), f"goal.after {written.after!r} is not a send or digest step of this journey")
    resolved = listener_key(written.key_path, key_path, sample)
    goal = Goal(event_type=event_type, within=written.within, key_path=resolved, when=written.when,
                after=written.after)
    return goal, Listener(event_type, resolved, written.when)
