"""Measurable journeys: conversion goals, holdouts, control arms and delivery waits, as data.

A journey may declare a `Goal` (an event type with a filter, matched on the instance key, within
a window that opens at entry or when a given send step runs) and a holdout share: a stable share
of customers who enter and walk the steps but receive nothing, so the journey's lift can be
measured. `split` variants marked ``control`` receive nothing in that split.

Everything here is pure (no Temporal): the interpreter keeps one `Progress` per instance in its
state and reports it in the status query; `journeys.report` aggregates many of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Outcome a ``wait_for`` may wait on, and every reported outcome that satisfies it: a click
#: implies an open, and an open or a click implies delivery (opens of image-blocking clients are
#: often reported only as clicks).
WAITABLE_OUTCOMES: Mapping[str, frozenset[str]] = {
    "delivered": frozenset({"delivered", "opened", "clicked"}),
    "opened": frozenset({"opened", "clicked"}),
    "clicked": frozenset({"clicked"}),
    "bounced": frozenset({"bounced"}),
    "undelivered": frozenset({"undelivered", "dropped"}),
}
#: Reported outcomes that make a send with ``fallback_within`` try its fallback channel.
LATE_FAILURES = frozenset({"bounced", "undelivered", "dropped"})
#: Reported outcomes that end a send's wait for a late failure: the message arrived.
ARRIVED = frozenset({"delivered", "opened", "clicked"})
#: Arm label of held-out instances (never a split variant name: those are checked by the loader).
HOLDOUT_ARM = "holdout"
#: Arm label of instances that took no split (yet), or of a journey without splits.
NO_ARM = "all"
#: Delivery report ids remembered per instance, to drop a report delivered twice.
REPORT_IDS_KEPT = 500


@dataclass(frozen=True)
class Goal:
    """What counts as a conversion for one journey.

    Attributes:
        event_type: the event that converts.
        within: a duration; the window the conversion must arrive in.
        key_path: where the instance key is in the goal event (resolved by the loader).
        when: a condition over the goal event.
        after: a send (or digest) step id whose run opens the window; None: the window opens at entry.
    """

    event_type: str
    within: str
    key_path: str | None = None
    when: str | None = None
    after: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The goal as it appears in a snapshot."""
        return {"event_type": self.event_type, "within": self.within, "key_path": self.key_path,
                "when": self.when, "after": self.after}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Goal | None:
        """Reads `as_json`'s form; None for snapshots without a goal."""
        if not data:
            return None
        return cls(event_type=str(data["event_type"]), within=str(data["within"]), key_path=data.get("key_path"),
                   when=data.get("when"), after=data.get("after"))


def holdout_bucket(journey_id: str, customer_id: str) -> int:
    """The customer's holdout bucket 0..99: stable, and salted apart from the split buckets.

    The salt makes the holdout independent of ``split_bucket`` (same inputs, other hash input), so
    held-out customers are spread evenly over every split variant.
    """
    digest = hashlib.sha256(f"holdout:{journey_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def is_held_out(journey_id: str, customer_id: str, percent: int) -> bool:
    """Whether the customer is in the journey's holdout of ``percent`` %."""
    return percent > 0 and holdout_bucket(journey_id, customer_id) < percent


def arm_label(holdout: bool, variants: Mapping[str, str]) -> str:
    """The bounded ``arm`` label of an instance: ``holdout``, ``<split>=<variant>,...`` or ``all``."""
    if holdout:
        return HOLDOUT_ARM
    if not variants:
        return NO_ARM
    return ",".join(f"{split}={variant}" for split, variant in variants.items())


@dataclass(frozen=True)
class DeliveryFact:
    """One delivery report the instance received for one of its sends."""

    step_id: str
    channel: str
    outcome: str
    at: str


@dataclass
class Progress:
    """What an instance did, for funnels and conversion reports; carried across continue-as-new.

    Attributes:
        entered_at: when the instance started (ISO 8601 UTC).
        holdout: the customer is held out: steps run, nothing is sent.
        reached: step ids in the order the instance first entered them.
        sent_at: for each send/digest step that ran, when (the goal's ``after`` anchor). Holdouts
            and control arms record the steps they walked too, so their goal windows line up.
        sent: step ids whose send reached the customer (sent or duplicate).
        delivery: delivery reports received (deduplicated by report id).
        report_ids: the most recent report ids seen.
        converted_at: when the goal event arrived; None when it has not (yet).
        conversion_event_id: the event that converted.
        control: split step ids where the instance took a control variant.
        goal_until: when the goal window closes, once it has opened.
        exited: why the instance ended early (exit event or exit step), if it did.
    """

    entered_at: str = ""
    holdout: bool = False
    reached: list[str] = field(default_factory=list)
    sent_at: dict[str, str] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    delivery: list[DeliveryFact] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)
    converted_at: str | None = None
    conversion_event_id: str | None = None
    control: list[str] = field(default_factory=list)
    goal_until: str | None = None
    exited: str | None = None

    @property
    def converted(self) -> bool:
        return self.converted_at is not None

    def outcomes_of(self, step_id: str) -> set[str]:
        """Every outcome reported for ``step_id``'s sends."""
        return {fact.outcome for fact in self.delivery if fact.step_id == step_id}

    def remember_report(self, report_id: str) -> bool:
        """Records ``report_id``; False when it was seen before (the report is a redelivery)."""
        if not report_id:
            return True
        if report_id in self.report_ids:
            return False
        self.report_ids.append(report_id)
        del self.report_ids[:-REPORT_IDS_KEPT]
        return True
