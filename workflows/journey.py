"""The generic journey interpreter: one workflow type runs every journey definition.

The definition snapshot arrives in the workflow input, so an instance runs the version it was
started with no matter how the files change later. The interpreter walks the step tree (see
`journeys.steps`): ``send``, ``delay``, ``branch``, ``wait_for``, ``split``, ``digest``,
``exit`` and ``webhook`` (workflows/webhooks.py). Everything it decides is a function of the snapshot, the events it received and
``workflow.now()``: no randomness (splits hash the customer and journey ids), no wall clock.

History stays bounded: after ``continue_as_new_after`` steps plus events in one run, or when
the server suggests it, the instance continues as new carrying its `JourneyState` (position,
context, seen event ids, sends, and the deadline and events of a wait in progress).

Traces: an event that ends a ``wait_for`` is the cause of the steps it leads to, up to the next
wait, so their sends are traced in the event's trace (`core.workflow_traces`). That changes span
parents and activity headers only, never a command, so it needs no patch.

Changing what this module does for a given history breaks running journeys; the replay test
(tests/workflows/test_replay.py) replays recorded histories to catch that in CI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from temporalio import workflow

from workflows import _goals, born
from workflows.queues import SEND_QUEUE_PER_CHANNEL_PATCH
from workflows.sending import (
    NO_CONTACT_FALLBACK_PATCH,
    SEND_HTML_PART_PATCH,
    SUPPRESSED_FALLBACK_PATCH,
    Fallback,
    SendRecord,
    send_fallback,
    send_step,
)
from workflows.webhooks import WEBHOOK_STEP_PATCH, WebhookRecord, WebhookStatus, webhook_step

with workflow.unsafe.imports_passed_through():
    from activities.outcomes import DELIVERY_SIGNAL, DeliveryReport, SendStatus
    from core import workflow_traces
    from events.model import CustomerEvent
    from journeys import expressions
    from journeys.durations import parse_duration
    from journeys.goals import WAITABLE_OUTCOMES, Progress, arm_label
    from journeys.model import JourneySnapshot, decode_snapshot
    from journeys.paths import lookup
    from journeys.steps import (
        BranchStep,
        DelayStep,
        DigestStep,
        ExitStep,
        Flow,
        OnWebhookFailure,
        SendOptions,
        SendStep,
        SplitStep,
        SplitVariant,
        Step,
        StepKind,
        WaitForStep,
        WebhookStep,
        flow,
    )
    from journeys.timing import next_local_time, parse_timestamp, signed_duration

JOURNEY_WORKFLOW = "Journey"
EVENT_SIGNAL = "event"
STATUS_QUERY = "status"

#: Seen event ids kept for de-duplication; older ids fall off (redeliveries come soon after).
SEEN_EVENT_IDS_KEPT = 1000
#: Step visits kept for the status query.
TRAIL_KEPT = 50
#: Events held for the next wait while the journey is between waits (see `JourneyWorkflow._hold`).
PENDING_KEPT = 20
#: Events that arrive while the journey is busy (before its first step, during a send) count for the next wait.
PENDING_EVENTS_PATCH = "events-between-waits-count"
#: The patches a journey started by this code (or continued as new by it) has without a marker.
#: A new patch joins this list in the release after the one that adds it, once no worker runs
#: code without it (an older worker would ask the patch for an instance born with it).
BORN_WITH: tuple[str, ...] = (
    _goals.GOALS_PATCH, PENDING_EVENTS_PATCH, WEBHOOK_STEP_PATCH, SEND_QUEUE_PER_CHANNEL_PATCH,
    SEND_HTML_PART_PATCH, NO_CONTACT_FALLBACK_PATCH, SUPPRESSED_FALLBACK_PATCH)


@dataclass(frozen=True)
class StepVisit:
    """One step the instance entered, and when (ISO 8601 UTC).

    ``kind`` is a `StepKind`; histories recorded when it was typed ``str`` carry the same words, which
    the converter turns into members.
    """

    step_id: str
    kind: StepKind
    at: str
    note: str = ""


@dataclass
class JourneyState:
    """Everything an instance carries from one run into the next: the workflow's one state object.

    The workflow reads and updates this object in place and hands it whole to continue-as-new, so
    no field can be forgotten on the way. Its JSON is what it was when the workflow copied its
    attributes into a frozen `JourneyState`, so the state in recorded continue-as-new inputs decodes.

    Attributes:
        cursor: id of the step to run (or resume) next; None when the journey is done.
        context: the evaluation context: trigger event, ``journey`` (id, version, variants).
        seen_event_ids: most recent event ids, to drop redelivered signals.
        sends: every send so far.
        trail: the most recent step visits.
        deadline: for a ``delay``, ``wait_for`` or ``digest`` in progress, when it ends (ISO).
        collected: events a ``digest`` in progress has collected.
        runs: how many runs this instance has had (1 for the first).
        webhooks: every webhook call so far (its saved response is in ``context["webhooks"]``).
        pending: events received while no wait was in progress, for the next ``wait_for`` or ``digest``.
    """

    cursor: str | None
    context: dict[str, Any]
    seen_event_ids: list[str] = field(default_factory=list)
    sends: list[SendRecord] = field(default_factory=list)
    trail: list[StepVisit] = field(default_factory=list)
    deadline: str | None = None
    collected: list[CustomerEvent] = field(default_factory=list)
    runs: int = 1
    #: Funnel and goal progress (`journeys.goals.Progress`); empty in states carried by older runs.
    progress: Progress = field(default_factory=Progress)
    webhooks: list[WebhookRecord] = field(default_factory=list)
    pending: list[CustomerEvent] = field(default_factory=list)


@dataclass(frozen=True)
class JourneyInput:
    """Start input: the definition snapshot and the triggering event.

    Attributes:
        journey: the definition snapshot (``JourneyDefinition.snapshot()``, in any format
            `journeys.model.decode_snapshot` reads), fixed for the instance.
        event: the event that started the instance; sends address its customer.
        state: set when continuing as new; None on the first run.
        continue_as_new_after: steps plus received events after which a run continues as new.
        born_with: the patches this instance has from its start (`workflows.born`); empty in the
            inputs of journeys started before the field existed, which ask each patch instead.
    """

    journey: dict[str, Any]
    event: CustomerEvent
    state: JourneyState | None = None
    continue_as_new_after: int = 500
    born_with: tuple[str, ...] = ()

    @classmethod
    def starting(cls, journey: dict[str, Any], event: CustomerEvent) -> JourneyInput:
        """The input of a new instance: born with every patch of this code."""
        return cls(journey=journey, event=event, born_with=BORN_WITH)


@dataclass
class JourneyStatus:
    """Answer of the ``status`` query, and the workflow's result."""

    journey_id: str
    journey_version: int
    current_step: str | None
    finished: bool
    exit_reason: str | None
    sends: list[SendRecord] = field(default_factory=list)
    current_step_kind: StepKind | None = None
    waiting_until: str | None = None
    content_hash: str = ""
    variants: dict[str, str] = field(default_factory=dict)
    trail: list[StepVisit] = field(default_factory=list)
    runs: int = 1
    #: Entry, holdout, steps reached, sends, delivery reports and conversion of the instance.
    progress: Progress = field(default_factory=Progress)
    webhooks: list[WebhookRecord] = field(default_factory=list)

    @property
    def converted(self) -> bool:
        return self.progress.converted

    @property
    def arm(self) -> str:
        """``holdout``, the split variants taken (``offer=a``), or ``all``."""
        return arm_label(self.progress.holdout, self.variants)


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
        """Decodes the snapshot and takes up the carried state before any handler runs.

        Signals delivered in the same task as the start (an exit right after the trigger) are
        handled before ``run`` begins, so they must already see the journey's exit rules.
        """
        self._journey: JourneySnapshot = decode_snapshot(start.journey)
        self._event: CustomerEvent = start.event
        self._limit = start.continue_as_new_after
        self._born_with = frozenset(start.born_with)
        key = lookup(start.event.as_context(), self._journey.key_path) if self._journey.key_path else None
        self._instance_key: str | None = None if key is None else str(key)
        if start.state is None:
            self._state = JourneyState(cursor=None, context={**start.event.as_context(), "journey": {
                "id": self._journey.id, "version": self._journey.version,
                "content_hash": self._journey.content_hash, "variants": {}}})
            self._seen_set: set[str] = set()
            self._remember(start.event.event_id)
            self._state.progress = _goals.start_progress(self._journey, start.event.customer.id, workflow.now())
        else:
            self._state = replace(start.state, runs=start.state.runs + 1)
            self._seen_set = set(self._state.seen_event_ids)
        # What belongs to this run only; nothing here needs to survive continue-as-new.
        self._active: Step | None = None
        self._exit_reason: str | None = None
        self._finished = False
        self._received: CustomerEvent | None = None
        # Trace contexts the events came in (`core.workflow_traces`), so that what an event wakes up
        # is traced in its trace: of the received event, of the held ones (by event id), and of the
        # event that woke the steps now running (empty: the run's own trace). Kept for this run only.
        self._received_trace: dict[str, str] = {}
        self._pending_traces: dict[str, dict[str, str]] = {}
        self._cause: dict[str, str] = {}
        self._work_this_run = 0
        # Set by run() from the journey's options and GOALS_PATCH; see workflows/_goals.py.
        self._measured = False

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
        self._check_goal(event)
        for listener in self._journey.exit_events:
            if self._matches(event, listener.event_type, listener.key_path, listener.when, step="exit"):
                self._exit_reason = f"exit event {event.event_type}"
                return
        trace = workflow_traces.message_trace()
        match self._active:
            case WaitForStep() | DigestStep() as waiting:
                self._offer(waiting, event, trace)
            case DelayStep():
                pass
            case _:
                self._hold(event, trace)

    @workflow.signal(name=DELIVERY_SIGNAL)
    def on_delivery(self, report: DeliveryReport) -> None:
        """Receives a provider's report on one of this instance's sends; a redelivered report_id is ignored."""
        if _goals.record_delivery(self._journey, self._progress, report, self._arm):
            self._work_this_run += 1

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> JourneyStatus:
        """The current step, sends so far and how the journey ended, if it has."""
        deadline = self._deadline
        return JourneyStatus(
            journey_id=self._journey.id,
            journey_version=self._journey.version,
            current_step=None if self._finished else self._state.cursor,
            finished=self._finished,
            exit_reason=self._exit_reason,
            sends=list(self._state.sends),
            current_step_kind=self._active.KIND if self._active is not None and not self._finished else None,
            waiting_until=deadline.isoformat() if deadline and not self._finished else None,
            content_hash=self._journey.content_hash,
            variants=dict(self._context.get("journey", {}).get("variants", {})),
            trail=list(self._state.trail),
            runs=self._state.runs,
            progress=self._progress,
            webhooks=list(self._state.webhooks),
        )

    @property
    def born_with(self) -> frozenset[str]:
        """The patches this instance has from its start (`workflows.born`)."""
        return self._born_with

    # --- the run loop ---------------------------------------------------------------------

    @workflow.run
    async def run(self, start: JourneyInput) -> JourneyStatus:
        """Runs (or, after continue-as-new, resumes) the journey until it ends or exits."""
        steps = flow(self._journey.steps)
        state = self._state
        if start.state is None:
            state.cursor = steps.first
        self._measured = _goals.uses_measurement(self._journey) and born.has(_goals.GOALS_PATCH)
        if start.state is None:
            _goals.count_entry(self._journey, self._progress)
        try:
            while state.cursor is not None and self._exit_reason is None:
                if self._continue_as_new_due():
                    raise _ContinueAsNew()
                step = steps.steps[state.cursor]
                self._active = step
                if state.deadline is None:
                    self._visit(step)
                    self._take_pending(step)
                if isinstance(step, DelayStep | WaitForStep | DigestStep):
                    self._cause = {}  # what follows a wait is the journey's own doing, unless an event ends it
                workflow_traces.cause_next_activities(self._cause)
                next_id = await self._run_step(step, steps)
                if self._exit_reason is not None:
                    break
                state.cursor = next_id
                self._active = None
                state.deadline = None
                state.collected = []
                self._received = None
                self._received_trace = {}
            if self._measured and self._exit_reason is None:
                await self._wait_for_goal()
        except _ContinueAsNew:
            workflow.logger.info("journey continuing as new after %d steps and events", self._work_this_run)
            workflow.continue_as_new(replace(start, state=state, born_with=BORN_WITH))
        self._finished = True
        self._active = None
        state.deadline = None
        _goals.record_finish(self._journey, self._progress, self._exit_reason, self._arm)
        workflow.logger.info("journey finished exit_reason=%s sends=%d", self._exit_reason, len(state.sends))
        return self.status()

    async def _run_step(self, step: Step, steps: Flow) -> str | None:
        """Runs one step; returns the id of the step to run next."""
        match step:
            case SendStep(send=options) if self._measured:
                await self._send(step.id, options, self._context)
            case SendStep(send=options):
                self._state.sends.append(await send_step(step.id, options, self._journey, self._event, self._context,
                                                         stop_waiting=self._has_exited))
                self._counted_send(step.id)
            case DelayStep():
                if self._state.deadline is None:
                    self._set_deadline(self._delay_deadline(step))
                await self._wait(lambda: False)
            case BranchStep(cases=cases, otherwise=otherwise):
                for number, case in enumerate(cases, start=1):
                    if expressions.matches(case.when, self._context, journey=self._journey.id, step=step.id,
                                           on_error=_count_expression_error):
                        self._note(step.id, f"case {number}: {case.when}")
                        return steps.arm_start(step.id, case.steps)
                self._note(step.id, "else")
                return steps.arm_start(step.id, otherwise)
            case WaitForStep(send=str() as target, outcome=outcome) if self._measured and outcome is not None:
                if self._state.deadline is None:
                    self._set_deadline(workflow.now() + parse_duration(step.timeout))
                wanted = WAITABLE_OUTCOMES[outcome]
                received = await self._wait(lambda: bool(self._progress.outcomes_of(target) & wanted))
                self._note(step.id, f"{outcome}" if received else f"not {outcome}")
                return steps.arm_start(step.id, step.received if received else step.timed_out)
            case WaitForStep():
                if self._state.deadline is None:
                    self._set_deadline(workflow.now() + parse_duration(step.timeout))
                received = await self._wait(lambda: self._received is not None)
                self._note(step.id, "received" if received else "timed_out")
                self._cause = self._received_trace if received else {}
                return steps.arm_start(step.id, step.received if received else step.timed_out)
            case SplitStep(variants=variants):
                return steps.arm_start(step.id, self._choose_variant(step.id, variants))
            case DigestStep():
                await self._digest(step)
            case ExitStep(reason=reason):
                self._exit_reason = reason or f"exit step {step.id}"
            case WebhookStep() if born.has(WEBHOOK_STEP_PATCH):
                record = await webhook_step(step, self._journey, self._context)
                self._state.webhooks.append(record)
                self._note(step.id, record.outcome)
                if record.status is WebhookStatus.FAILED and step.on_failure is OnWebhookFailure.EXIT:
                    self._exit_reason = f"webhook {step.id} failed: {record.error_type}"
            case WebhookStep():
                pass  # histories from before webhook steps ran: the step did nothing then
            case _:
                assert_never(step)  # a new step type must be handled here (mypy checks it)
        return steps.following[step.id]

    # --- step helpers ---------------------------------------------------------------------

    async def _wait(self, satisfied: Callable[[], bool]) -> bool:
        """Waits until ``satisfied()``, an exit, or the deadline; True when ``satisfied()`` held."""
        deadline = self._deadline
        assert deadline is not None
        remaining = (deadline - workflow.now()).total_seconds()

        def done() -> bool:
            return bool(satisfied()) or self._exit_reason is not None

        if remaining > 0 and not done():
            try:
                await workflow.wait_condition(lambda: done() or self._continue_as_new_due(), timeout=remaining)
            except TimeoutError:
                pass
        if not done() and deadline > workflow.now() and self._continue_as_new_due():
            raise _ContinueAsNew()
        return bool(satisfied())

    def _delay_deadline(self, step: DelayStep) -> datetime:
        now = workflow.now()
        if step.duration is not None:
            return now + parse_duration(step.duration)
        if step.until_local_time is not None:
            base = now + (parse_duration(step.after) if step.after else timedelta())
            zone = str(lookup(self._context, "customer.timezone") or "UTC")
            return next_local_time(base, step.until_local_time, zone)
        moment = parse_timestamp(lookup(self._context, str(step.until)))
        if moment is None:
            workflow.logger.warning("delay until %s: no timestamp in the event, not waiting", step.until)
            return now
        try:
            return moment + (signed_duration(step.offset) if step.offset else timedelta())
        except OverflowError:
            # An event timestamp near year 9999 plus the offset leaves the calendar: a typo upstream.
            workflow.logger.warning("delay until %s: timestamp plus offset out of range, not waiting", step.until)
            return now

    def _choose_variant(self, step_id: str, variants: tuple[SplitVariant, ...]) -> tuple[Step, ...]:
        bucket = split_bucket(self._journey.id, self._event.customer.id)
        chosen = variants[-1]
        floor = 0
        for variant in variants:
            floor += variant.percent
            if bucket < floor:
                chosen = variant
                break
        self._context["journey"].setdefault("variants", {})[step_id] = chosen.name
        self._note(step_id, f"variant {chosen.name} (bucket {bucket})")
        if chosen.control:
            self._progress.control.append(step_id)
        if not self._progress.holdout:
            _goals.count_assignment(self._journey, self._arm)
        return chosen.steps

    async def _digest(self, step: DigestStep) -> None:
        if self._state.deadline is None:
            self._set_deadline(workflow.now() + parse_duration(step.window))
        await self._wait(lambda: False)
        if self._exit_reason is not None:
            return
        collected = self._state.collected
        self._note(step.id, f"{len(collected)} events collected")
        if len(collected) < step.min_events:
            return
        context = {**self._context, "digest": {"events": [dict(e.as_context()) for e in collected],
                                               "count": len(collected)}}
        if self._measured:
            await self._send(step.id, step.send, context)
            return
        self._state.sends.append(await send_step(step.id, step.send, self._journey, self._event, context,
                                                 stop_waiting=self._has_exited))
        self._counted_send(step.id)

    async def _send(self, step_id: str, options: SendOptions, context: dict[str, Any]) -> None:
        """A measured send: nothing for holdouts; else the send, then a late fallback if one is reported."""
        progress = self._progress
        _goals.record_send_step(self._journey, progress, step_id, workflow.now())
        if progress.holdout:
            self._state.sends.append(_goals.holdout_record(step_id, options.channel, options.template))
            return
        record = await send_step(step_id, options, self._journey, self._event, context, stop_waiting=self._has_exited)
        self._state.sends.append(record)
        _goals.record_send(self._journey, progress, record, self._arm)
        if not (options.fallback and options.fallback_within and SendStatus(record.status).reached_customer
                and record.fallback_from is None and options.fallback != record.channel):
            return
        failed = await _goals.late_failure(progress, record, options.fallback_within, self._has_exited)
        if failed is None:
            return
        self._note(step_id, f"{record.channel} {failed}: fallback {options.fallback}")
        second = await send_fallback(step_id, options, self._journey, self._event, context,
                                     stop_waiting=self._has_exited)
        second = second.falling_back_from(Fallback(record.channel, failed))
        self._state.sends.append(second)
        _goals.record_send(self._journey, progress, second, self._arm)

    def _counted_send(self, step_id: str) -> None:
        """Funnel bookkeeping of an unmeasured send (state and counters only: no command changes)."""
        _goals.record_send_step(self._journey, self._progress, step_id, workflow.now())
        _goals.record_send(self._journey, self._progress, self._state.sends[-1], self._arm)

    async def _wait_for_goal(self) -> None:
        """After the last step, keeps listening for the goal until it converts, exits or the window closes."""
        deadline = _goals.goal_deadline(self._progress)
        if deadline is None or deadline <= workflow.now():
            return
        self._state.deadline = self._progress.goal_until

        def done() -> bool:
            return self._progress.converted or self._exit_reason is not None

        try:
            await workflow.wait_condition(lambda: done() or self._continue_as_new_due(),
                                          timeout=(deadline - workflow.now()).total_seconds())
        except TimeoutError:
            return
        if not done() and self._continue_as_new_due():
            raise _ContinueAsNew()

    def _check_goal(self, event: CustomerEvent) -> None:
        goal = self._journey.goal
        if goal is None or not _goals.goal_open(self._progress, workflow.now()):
            return
        if self._matches(event, goal.event_type, goal.key_path, goal.when, step="goal"):
            _goals.record_conversion(self._journey, self._progress, event.event_id, workflow.now(), self._arm)

    @property
    def _progress(self) -> Progress:
        return self._state.progress

    @property
    def _arm(self) -> str:
        return _goals.arm(self._progress, self._context.get("journey", {}).get("variants", {}))

    def _has_exited(self) -> bool:
        return self._exit_reason is not None

    def _matches(self, event: CustomerEvent, event_type: str, key_path: str | None, when: str | None, *,
                 step: str) -> bool:
        if event.event_type != event_type:
            return False
        context = event.as_context()
        if key_path and self._instance_key is not None and str(lookup(context, key_path)) != self._instance_key:
            return False
        return when is None or expressions.matches(when, context, journey=self._journey.id, step=step,
                                                   on_error=_count_expression_error)

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def _context(self) -> dict[str, Any]:
        return self._state.context

    @property
    def _deadline(self) -> datetime | None:
        return parse_timestamp(self._state.deadline) if self._state.deadline else None

    def _set_deadline(self, moment: datetime) -> None:
        self._state.deadline = moment.isoformat()

    def _remember(self, event_id: str) -> None:
        seen = self._state.seen_event_ids
        seen.append(event_id)
        self._seen_set.add(event_id)
        while len(seen) > SEEN_EVENT_IDS_KEPT:
            self._seen_set.discard(seen.pop(0))

    def _hold(self, event: CustomerEvent, trace: dict[str, str]) -> None:
        """Keeps an event that arrived between waits: in the start's own task, or during a send or webhook.

        Without this, an event published a moment after the trigger (a purchase right after the cart
        update) is lost whenever it reaches the instance before the interpreter reaches its wait.
        """
        pending = self._state.pending
        pending.append(event)
        if trace:
            self._pending_traces[event.event_id] = trace
        for dropped in pending[:-PENDING_KEPT]:
            self._pending_traces.pop(dropped.event_id, None)
        del pending[:-PENDING_KEPT]

    def _take_pending(self, step: Step) -> None:
        """Hands held events to the wait or digest being entered; a delay (or any wait) ends the holding."""
        pending = self._state.pending
        if not pending or not isinstance(step, DelayStep | WaitForStep | DigestStep):
            return
        if not born.has(PENDING_EVENTS_PATCH):
            return
        if isinstance(step, WaitForStep | DigestStep):
            for event in pending:
                self._offer(step, event, self._pending_traces.get(event.event_id, {}))
        pending.clear()
        self._pending_traces.clear()

    def _offer(self, step: WaitForStep | DigestStep, event: CustomerEvent, trace: dict[str, str]) -> None:
        """A ``wait_for`` takes its first matching event; a ``digest`` collects every matching one."""
        match step:
            case WaitForStep() if self._received is None and self._matches_step(event, step):
                self._received = event
                self._received_trace = trace
            case DigestStep() if self._matches_step(event, step):
                self._state.collected.append(event)

    def _matches_step(self, event: CustomerEvent, step: WaitForStep | DigestStep) -> bool:
        return self._matches(event, step.event, step.key, step.when, step=step.id)

    def _continue_as_new_due(self) -> bool:
        return self._work_this_run >= self._limit or workflow.info().is_continue_as_new_suggested()

    def _visit(self, step: Step) -> None:
        self._work_this_run += 1
        _goals.record_step(self._progress, step.id)
        _goals.count_step(self._journey, step.id, self._arm)
        trail = self._state.trail
        trail.append(StepVisit(step.id, step.KIND, workflow.now().isoformat()))
        del trail[:-TRAIL_KEPT]

    def _note(self, step_id: str, note: str) -> None:
        trail = self._state.trail
        for index in range(len(trail) - 1, -1, -1):
            if trail[index].step_id == step_id:
                trail[index] = replace(trail[index], note=note)
                return
