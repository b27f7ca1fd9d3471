"""Validation of goals, holdouts, control arms and delivery waits (called by `journeys.loader`).

Kept apart from the loader so that the measurement options are one module: each problem names
the file and line like every other definition problem.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from journeys._checks import CONTEXT_ROOTS, Report, check_expression, check_key, listener_key, sample_for
from journeys.durations import check_duration
from journeys.goals import Goal
from journeys.model import Listener
from journeys.steps import kind_of
from journeys.steps import walk_document as walk

#: Step kinds whose run can anchor a goal window or be waited on for a delivery report.
_SENDING_KINDS = ("send", "digest")


def _duration(report: Report, where: tuple[Any, ...], value: str) -> None:
    try:
        check_duration(value)
    except ValueError as exc:
        report.add(where, f"{where[-1]}: {exc}")


def check_steps(report: Report, raw: Mapping[str, Any]) -> None:
    """Delivery waits name an earlier send step; ``fallback_within`` needs a fallback; control arms are empty."""
    order: dict[str, tuple[int, str]] = {}
    for index, (step, _) in enumerate(walk(raw["steps"])):
        order.setdefault(str(step["id"]), (index, kind_of(step)))
    for index, (step, path) in enumerate(walk(raw["steps"])):
        kind = kind_of(step)
        body = step.get(kind) or {}
        send = body if kind == "send" else (body.get("send") or {}) if kind == "digest" else {}
        where = (*path, "send") if kind == "send" else (*path, "digest", "send")
        if "fallback_within" in send:
            if not send.get("fallback"):
                report.add((*where, "fallback_within"), "fallback_within only goes with a fallback channel")
            else:
                _duration(report, (*where, "fallback_within"), send["fallback_within"])
        if kind == "wait_for" and "send" in body:
            target = str(body["send"])
            found = order.get(target)
            if found is None or found[1] not in _SENDING_KINDS:
                report.add((*path, "wait_for", "send"), f"wait_for.send {target!r} is not a send or digest step "
                                                         "of this journey")
            elif found[0] >= index:
                report.add((*path, "wait_for", "send"), f"wait_for.send {target!r} comes after this wait; a "
                                                         "delivery wait follows the send it waits on")
            for option in ("key", "when"):
                if option in body:
                    report.add((*path, "wait_for", option), f"{option} only goes with event, not with a delivery "
                                                             "wait (send/outcome)")
        if kind == "split":
            for number, variant in enumerate(body.get("variants") or ()):
                if variant.get("control") and variant.get("steps"):
                    report.add((*path, "split", "variants", number, "steps"),
                               f"control variant {variant['name']!r} receives nothing: its steps must be empty")


def check_goal(report: Report, raw: Mapping[str, Any], known: Collection[str],
               key_path: str | None) -> tuple[Goal | None, Listener | None]:
    """The journey's goal (None without one) and the listener that routes goal events to instances."""
    body = raw.get("goal")
    if not body:
        if raw.get("holdout_percent"):
            report.add(("holdout_percent",), "holdout_percent without a goal: nothing would measure what the "
                                             "held-out customers miss (declare a goal)")
        controls = [path for step, path in walk(raw["steps"]) if kind_of(step) == "split"
                    and any(v.get("control") for v in step["split"].get("variants") or ())]
        for path in controls:
            report.add((*path, "split"), "a control variant without a goal: nothing would measure it (declare a goal)")
        return None, None
    event_type = str(body["event"])
    if event_type not in known:
        report.add(("goal", "event"), f"unknown event type {event_type!r}")
        return None, None
    sample = sample_for(event_type, known)
    if body.get("filter"):
        check_expression(report, ("goal", "filter"), body["filter"], sample,
                                 CONTEXT_ROOTS - {"journey"})
    if body.get("key"):
        check_key(report, ("goal", "key"), body["key"], sample, event_type)
    _duration(report, ("goal", "within"), body["within"])
    after = body.get("after")
    if after is not None:
        kinds = {str(step["id"]): kind_of(step) for step, _ in walk(raw["steps"])}
        if kinds.get(str(after)) not in _SENDING_KINDS:
            report.add(("goal", "after"), f"goal.after {after!r} is not a send or digest step of this journey")
    resolved = listener_key(body.get("key"), key_path, sample)
    goal = Goal(event_type=event_type, within=str(body["within"]), key_path=resolved, when=body.get("filter"),
                after=None if after is None else str(after))
    return goal, Listener(event_type, resolved, body.get("filter"))
