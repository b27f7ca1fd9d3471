"""The generic journey interpreter: one workflow type runs every journey definition.

The definition snapshot arrives in the workflow input, so an instance runs the version it was
started with no matter how the files change later. The interpreter walks the step tree (see
`journeys.steps`): ``send``, ``delay``, ``branch``, ``wait_for``, ``split``, ``digest`` and
``exit``. Everything it decides is a function of the snapshot, the events it received and
``workflow.now()``: no randomness (splits hash the customer and journey ids), no wall clock.

History stays bounded: after ``continue_as_new_after`` steps plus events in one run, or when
the server suggests it, the instance continues as new carrying its `JourneyState` (position,
context, seen event ids, sends, and the deadline and events of a wait in progress).

Changing what this module does for a given history breaks running journeys; the replay test
(tests/workflows/test_replay.py) replays recorded histories to catch that in CI.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from workflows.sending import SendRecord, send_step

with workflow.unsafe.imports_passed_through():
    from events.model import CustomerEvent
    from journeys import expressions
    from journeys.durations import parse_duration
    from journeys.paths import lookup
    from journeys.steps import Flow, flow, kind_of
    from journeys.timing import next_local_time, parse_timestamp, signed_duration

JOURNEY_WORKFLOW = "Journey"
EVENT_SIGNAL = "event"
STATUS_QUERY = "status"

#: Seen event ids kept for de-duplication; older ids fall off (redeliveries come soon after).
SEEN_EVENT_IDS_KEPT = 1000
#: Step visits kept for the status query.
TRAIL_KEPT = 50


@dataclass(frozen=True)
class StepVisit:
    """One step the instance entered, and when (ISO 8601 UTC)."""

    step_id: str
    kind: str
    at: str
    note: str = ""


@dataclass(frozen=True)
class JourneyState:
    """What an instance carries into its next run when it continues as new.

    Attributes:
        cursor: id of the step to run (or resume) next; None when the journey is done.
        context: the evaluation context: trigger event, ``journey`` (id, version, variants).
        seen_event_ids: most recent event ids, to drop redelivered signals.
        sends: every send so far.
        trail: the most recent step visits.
        deadline: for a ``delay``, ``wait_for`` or ``digest`` in progress, when it ends (ISO).
        collected: events a ``digest`` in progress has collected.
        runs: how many runs this instance has had (1 for the first).
    """

    cursor: str | None
    context: dict[str, Any]
    seen_event_ids: list[str] = field(default_factory=list)
    sends: list[SendRecord] = field(default_factory=list)
    trail: list[StepVisit] = field(default_factory=list)
    deadline: str | None = None
    collected: list[CustomerEvent] = field(default_factory=list)
    runs: int = 1


@dataclass(frozen=True)
class JourneyInput:
    """Start input: the definition snapshot and the triggering event.

    Attributes:
        journey: the definition snapshot (``JourneyDefinition.snapshot()``), fixed for the instance.
        event: the event that started the instance; sends address its customer.
        state: set when continuing as new; None on the first run.
        continue_as_new_after: steps plus received events after which a run continues as new.
    """

    journey: dict[str, Any]
    event: CustomerEvent
    state: JourneyState | None = None
    continue_as_new_after: int = 500


@dataclass
class JourneyStatus:
    """Answer of the ``status`` query, and the workflow's result."""

    journey_id: str
    journey_version: int
    current_step: str | None
    finished: bool
    exit_reason: str | None
    sends: list[SendRecord] = field(default_factory=list)
    current_step_kind: str | None = None
    waiting_until: str | None = None
    content_hash: str = ""
    variants: dict[str, str] = field(default_factory=dict)
    trail: list[StepVisit] = field(default_factory=list)
    runs: int = 1


def _count_expression_error(journey: str, step: str, error: Exception) -> None:
    """Counts a condition that failed on its data through the SDK meter, which skips replays."""
    workflow.metric_meter().create_counter(
        "eventflow_expression_errors", "Journey expressions that could not be evaluated and were false.",
    ).add(1, {"journey": journey, "step": step})
    workflow.logger.warning("expression error journey=%s step=%s error_type=%s", journey, step,
                            type(error).__name__)


class _ContinueAsNew(Exception):
    """Raised inside a wait when this run's history is long enough; the run loop continues as new."""


def split_bucket(journey_id: str, customer_id: str) -> int:
    """The customer's bucket 0..99 for every split of a journey: stable across versions and runs."""
    digest = hashlib.sha256(f"{journey_id}:{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    """Walks a definition's step tree for one customer."""

    @workflow.init
    def __init__(self, start: JourneyInput) -> None:
        """Restores the snapshot and carried state before any handler runs.

        Signals delivered in the same task as the start (an exit right after the trigger) are
        handled before ``run`` begins, so they must already see the journey's exit rules.
        """
        self._journey: dict[str, Any] = {}
        self._event: CustomerEvent | None = None
        self._context: dict[str, Any] = {}
        self._instance_key: str | None = None
        self._cursor: str | None = None
        self._active: Mapping[str, Any] | None = None
        self._exit_reason: str | None = None
        self._finished = False
        self._seen: list[str] = []
        self._seen_set: set[str] = set()
        self._sends: list[SendRecord] = []
        self._trail: list[StepVisit] = []
        self._deadline: datetime | None = None
        self._collected: list[CustomerEvent] = []
        self._received: CustomerEvent | None = None
        self._work_this_run = 0
        self._runs = 1
        self._limit = 500
        self._restore(start)

    # --- signals and queries --------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: CustomerEvent) -> None:
        """Receives events the journey listens to; redelivered events (same event_id) are ignored."""
        if event.event_id in self._seen_set:
            return
        self._remember(event.event_id)
        self._work_this_run += 1
        if self._finished or self._exit_reason is not None:
            return
        for listener in self._journey.get("exit_events", ()):
            if self._matches(event, listener["event_type"], listener.get("key_path"), listener.get("when"),
                             step="exit"):
                self._exit_reason = f"exit event {event.event_type}"
                return
        step = self._active
        if step is None:
            return
        kind = kind_of(step)
        if kind not in ("wait_for", "digest"):
            return
        spec = step[kind]
        if not self._matches(event, spec["event"], spec.get("key"), spec.get("when"), step=str(step["id"])):
            return
        if kind == "wait_for" and self._received is None:
            self._received = event
        elif kind == "digest":
            self._collected.append(event)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> JourneyStatus:
        """The current step, sends so far and how the journey ended, if it has."""
        current = None if self._finished else self._cursor
        return JourneyStatus(
            journey_id=self._journey.get("id", ""),
            journey_version=int(self._journey.get("version", 0)),
            current_step=current,
            finished=self._finished,
            exit_reason=self._exit_reason,
            sends=list(self._sends),
            current_step_kind=kind_of(self._active) if self._active is not None and not self._finished else None,
            waiting_until=self._deadline.isoformat() if self._deadline and not self._finished else None,
            content_hash=str(self._journey.get("content_hash", "")),
            variants=dict(self._context.get("journey", {}).get("variants", {})),
            trail=list(self._trail),
            runs=self._runs,
        )

    # --- the run loop ---------------------------------------------------------------------

    @workflow.run
    async def run(self, start: JourneyInput) -> JourneyStatus:
        """Runs (or, after continue-as-new, resumes) the journey until it ends or exits."""
        steps = flow(self._journey["steps"])
        if start.state is None:
            self._cursor = steps.first
        try:
            while self._cursor is not None and self._exit_reason is None:
                if self._continue_as_new_due():
                    raise _ContinueAsNew()
                step = steps.steps[self._cursor]
                self._active = step
                if self._deadline is None:
                    self._visit(step)
                next_id = await self._run_step(step, steps)
                if self._exit_reason is not None:
                    break
                self._cursor = next_id
                self._active = None
                self._deadline = None
                self._collected = []
                self._received = None
        except _ContinueAsNew:
            workflow.logger.info("journey continuing as new after %d steps and events", self._work_this_run)
            workflow.continue_as_new(replace(start, state=self._state()))
        self._finished = True
        self._active = None
        self._deadline = None
        workflow.logger.info("journey finished exit_reason=%s sends=%d", self._exit_reason, len(self._sends))
        return self.status()

    async def _run_step(self, step: Mapping[str, Any], steps: Flow) -> str | None:
        """Runs one step; returns the id of the step to run next."""
        step_id = str(step["id"])
        kind = kind_of(step)
        after = steps.following[step_id]
        if kind == "send":
            self._sends.append(await send_step(dict(step), self._journey, self._trigger, self._context,
                                               stop_waiting=self._has_exited))
        elif kind == "delay":
            if self._deadline is None:
                self._deadline = self._delay_deadline(step["delay"])
            await self._wait(lambda: False)
        elif kind == "branch":
            for number, case in enumerate(step["branch"]["cases"], start=1):
                if expressions.matches(case["when"], self._context, journey=self._journey_id, step=step_id,
                                       on_error=_count_expression_error):
                    self._note(step_id, f"case {number}: {case['when']}")
                    return steps.arm_start(step_id, case["steps"])
            self._note(step_id, "else")
            return steps.arm_start(step_id, step["branch"].get("else") or [])
        elif kind == "wait_for":
            spec = step["wait_for"]
            if self._deadline is None:
                self._deadline = workflow.now() + parse_duration(spec["timeout"])
            received = await self._wait(lambda: self._received is not None)
            self._note(step_id, "received" if received else "timed_out")
            return steps.arm_start(step_id, spec.get("received" if received else "timed_out") or [])
        elif kind == "split":
            return steps.arm_start(step_id, self._choose_variant(step_id, step["split"]["variants"]))
        elif kind == "digest":
            await self._digest(step)
        elif kind == "exit":
            self._exit_reason = str((step.get("exit") or {}).get("reason") or f"exit step {step_id}")
        return after

    # --- step helpers ---------------------------------------------------------------------

    async def _wait(self, satisfied: Callable[[], bool]) -> bool:
        """Waits until ``satisfied()``, an exit, or the deadline; True when ``satisfied()`` held."""
        assert self._deadline is not None
        remaining = (self._deadline - workflow.now()).total_seconds()
        done = lambda: bool(satisfied()) or self._exit_reason is not None  # noqa: E731
        if remaining > 0 and not done():
            try:
                await workflow.wait_condition(lambda: done() or self._continue_as_new_due(), timeout=remaining)
            except asyncio.TimeoutError:
                pass
        if not done() and self._deadline > workflow.now() and self._continue_as_new_due():
            raise _ContinueAsNew()
        return bool(satisfied())

    def _delay_deadline(self, spec: Mapping[str, Any]) -> datetime:
        now = workflow.now()
        if "duration" in spec:
            return now + parse_duration(spec["duration"])
        if "until_local_time" in spec:
            base = now + (parse_duration(spec["after"]) if spec.get("after") else timedelta())
            zone = str(lookup(self._context, "customer.timezone") or "UTC")
            return next_local_time(base, str(spec["until_local_time"]), zone)
        moment = parse_timestamp(lookup(self._context, str(spec["until"])))
        if moment is None:
            workflow.logger.warning("delay until %s: no timestamp in the event, not waiting", spec["until"])
            return now
        try:
            return moment + (signed_duration(spec["offset"]) if spec.get("offset") else timedelta())
        except OverflowError:
            # An event timestamp near year 9999 plus the offset leaves the calendar: a typo upstream.
            workflow.logger.warning("delay until %s: timestamp plus offset out of range, not waiting", spec["until"])
            return now

    def _choose_variant(self, step_id: str, variants: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        bucket = split_bucket(str(self._journey["id"]), self._trigger.customer.id)
        chosen = variants[-1]
        floor = 0
        for variant in variants:
            floor += int(variant["percent"])
            if bucket < floor:
                chosen = variant
                break
        self._context["journey"].setdefault("variants", {})[step_id] = str(chosen["name"])
        self._note(step_id, f"variant {chosen['name']} (bucket {bucket})")
        return list(chosen.get("steps") or [])

    async def _digest(self, step: Mapping[str, Any]) -> None:
        spec = step["digest"]
        if self._deadline is None:
            self._deadline = workflow.now() + parse_duration(spec["window"])
        await self._wait(lambda: False)
        if self._exit_reason is not None:
            return
        minimum = int(spec.get("min_events", 1))
        self._note(str(step["id"]), f"{len(self._collected)} events collected")
        if len(self._collected) < minimum:
            return
        context = {**self._context, "digest": {"events": [dict(e.as_context()) for e in self._collected],
                                               "count": len(self._collected)}}
        self._sends.append(await send_step({"id": step["id"], "send": spec["send"]}, self._journey,
                                           self._trigger, context, stop_waiting=self._has_exited))

    def _has_exited(self) -> bool:
        return self._exit_reason is not None

    def _matches(self, event: CustomerEvent, event_type: str, key_path: str | None, when: str | None, *,
                 step: str) -> bool:
        if event.event_type != event_type:
            return False
        context = event.as_context()
        if key_path and self._instance_key is not None and str(lookup(context, key_path)) != self._instance_key:
            return False
        return when is None or expressions.matches(when, context, journey=self._journey_id, step=step,
                                                   on_error=_count_expression_error)

    @property
    def _journey_id(self) -> str:
        return str(self._journey.get("id", ""))

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def _trigger(self) -> CustomerEvent:
        assert self._event is not None
        return self._event

    def _restore(self, start: JourneyInput) -> None:
        self._journey = start.journey
        self._event = start.event
        self._limit = start.continue_as_new_after
        key_path = start.journey.get("key_path")
        key = lookup(start.event.as_context(), key_path) if key_path else None
        self._instance_key = None if key is None else str(key)
        state = start.state
        if state is None:
            self._remember(start.event.event_id)
            self._context = {**start.event.as_context(), "journey": {
                "id": start.journey["id"], "version": start.journey["version"],
                "content_hash": start.journey.get("content_hash", ""), "variants": {}}}
            return
        self._cursor = state.cursor
        self._context = dict(state.context)
        for event_id in state.seen_event_ids:
            self._remember(event_id)
        self._sends = list(state.sends)
        self._trail = list(state.trail)
        self._deadline = parse_timestamp(state.deadline) if state.deadline else None
        self._collected = list(state.collected)
        self._runs = state.runs + 1

    def _state(self) -> JourneyState:
        return JourneyState(
            cursor=self._cursor,
            context=self._context,
            seen_event_ids=list(self._seen),
            sends=list(self._sends),
            trail=list(self._trail),
            deadline=self._deadline.isoformat() if self._deadline else None,
            collected=list(self._collected),
            runs=self._runs,
        )

    def _remember(self, event_id: str) -> None:
        self._seen.append(event_id)
        self._seen_set.add(event_id)
        while len(self._seen) > SEEN_EVENT_IDS_KEPT:
            self._seen_set.discard(self._seen.pop(0))

    def _continue_as_new_due(self) -> bool:
        return self._work_this_run >= self._limit or workflow.info().is_continue_as_new_suggested()

    def _visit(self, step: Mapping[str, Any]) -> None:
        self._work_this_run += 1
        self._trail.append(StepVisit(str(step["id"]), kind_of(step), workflow.now().isoformat()))
        del self._trail[:-TRAIL_KEPT]

    def _note(self, step_id: str, note: str) -> None:
        for index in range(len(self._trail) - 1, -1, -1):
            if self._trail[index].step_id == step_id:
                self._trail[index] = replace(self._trail[index], note=note)
                return
