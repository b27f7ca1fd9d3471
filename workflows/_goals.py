"""The interpreter's measurement: funnel counters, goal windows, delivery reports, holdout sends.

`workflows.journey` calls these at a few hooks; everything that changes what the workflow does
(holdouts not sending, a delivery wait, a late fallback, waiting out a goal window) happens only
when `GOALS_PATCH` is set, and the patch is asked for only by journeys that use one of those
options, so recorded histories of every other journey replay unchanged.

Counters go through the SDK meter (``workflow.metric_meter()``), which skips replays, with the
bounded labels journey, version, step, arm (``holdout``, ``<split>=<variant>,...`` or ``all``),
channel and outcome; never a customer id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

from workflows.sending import SendRecord

with workflow.unsafe.imports_passed_through():
    from activities.outcomes import DeliveryReport, SendStatus
    from journeys.durations import parse_duration
    from journeys.goals import ARRIVED, LATE_FAILURES, DeliveryFact, Progress, arm_label, is_held_out
    from journeys.model import JourneySnapshot
    from journeys.steps import DigestStep, SendStep, SplitStep, WaitForStep, walk
    from journeys.timing import parse_timestamp

#: Patch id of goals, holdouts, control arms, delivery waits and late fallbacks.
GOALS_PATCH = "journey-goals-delivery-waits"


def uses_measurement(journey: JourneySnapshot) -> bool:
    """Whether the journey uses an option that changes what the workflow does (and so needs the patch)."""
    if journey.goal is not None or journey.holdout_percent:
        return True
    for step, _ in walk(journey.steps):
        match step:
            case WaitForStep(send=str()):
                return True
            case SendStep(send=options) | DigestStep(send=options) if options.fallback_within:
                return True
            case SplitStep(variants=variants) if any(v.control for v in variants):
                return True
    return False


def has_split(journey: JourneySnapshot) -> bool:
    return any(isinstance(step, SplitStep) for step, _ in walk(journey.steps))


def start_progress(journey: JourneySnapshot, customer_id: str, now: datetime) -> Progress:
    """The progress of a new instance: entry time, holdout, and the goal window if it opens at entry."""
    progress = Progress(entered_at=now.isoformat(), holdout=is_held_out(journey.id, customer_id,
                                                                        journey.holdout_percent))
    if journey.goal is not None and journey.goal.after is None:
        progress.goal_until = (now + parse_duration(journey.goal.within)).isoformat()
    return progress


def arm(progress: Progress, variants: dict[str, str]) -> str:
    return arm_label(progress.holdout, variants)


def _count(name: str, description: str, journey: JourneySnapshot, **labels: str) -> None:
    workflow.metric_meter().create_counter(name, description).add(
        1, {"journey": journey.id, "version": str(journey.version), **labels})


def count_entry(journey: JourneySnapshot, progress: Progress) -> None:
    """An instance started (first run only); with its assignment when no split will assign one."""
    label = arm(progress, {})
    _count("eventflow_journey_entries", "Journey instances started.", journey, arm=label)
    if progress.holdout or not has_split(journey):
        count_assignment(journey, label)


def count_assignment(journey: JourneySnapshot, label: str) -> None:
    _count("eventflow_journey_assignments", "Instances assigned to an arm (holdout, split variant or all).",
           journey, arm=label)


def count_step(journey: JourneySnapshot, step_id: str, label: str) -> None:
    _count("eventflow_journey_steps", "Journey steps entered.", journey, step=step_id, arm=label)


def record_step(progress: Progress, step_id: str) -> None:
    if step_id not in progress.reached:
        progress.reached.append(step_id)


def record_send_step(journey: JourneySnapshot, progress: Progress, step_id: str, now: datetime) -> None:
    """A send or digest step ran (or was walked by a holdout): it may open the goal window."""
    progress.sent_at.setdefault(step_id, now.isoformat())
    goal = journey.goal
    if goal is not None and goal.after == step_id and progress.goal_until is None:
        progress.goal_until = (now + parse_duration(goal.within)).isoformat()


def record_send(journey: JourneySnapshot, progress: Progress, record: SendRecord, label: str) -> None:
    if SendStatus(record.status).reached_customer:
        if record.step_id not in progress.sent:
            progress.sent.append(record.step_id)
        _count("eventflow_journey_sends", "Journey sends that reached the provider.", journey,
               step=record.step_id, arm=label, channel=record.channel)


def holdout_record(step_id: str, channel: str, template_id: str) -> SendRecord:
    return SendRecord(step_id, channel, template_id, SendStatus.SKIPPED, error_type="holdout")


def record_delivery(journey: JourneySnapshot, progress: Progress, report: DeliveryReport, label: str) -> bool:
    """Takes one delivery report; False when it is a redelivery (same report id) and changed nothing."""
    if not progress.remember_report(report.report_id):
        return False
    step_id = report.step_id or step_of_key(report.idempotency_key)
    progress.delivery.append(DeliveryFact(step_id, report.channel, str(report.outcome), report.at))
    _count("eventflow_journey_delivery_reports", "Delivery reports received by journey instances.", journey,
           step=step_id or "unknown", arm=label, outcome=str(report.outcome))
    return True


async def late_failure(progress: Progress, record: SendRecord, within: str, exited: Callable[[], bool]) -> str | None:
    """Listens up to ``within`` for a report on ``record``'s send; the failure that calls for the fallback, if any.

    Never interrupted by continue-as-new: resuming would run the send step again.
    """
    def reported() -> set[str]:
        return {f.outcome for f in progress.delivery if f.step_id == record.step_id and f.channel == record.channel}

    try:
        await workflow.wait_condition(lambda: bool(reported() & (LATE_FAILURES | ARRIVED)) or exited(),
                                      timeout=parse_duration(within))
    except TimeoutError:
        return None
    failed = sorted(reported() & LATE_FAILURES)
    if not failed or reported() & ARRIVED or exited():
        return None
    return failed[0]


def step_of_key(idempotency_key: str) -> str:
    """The step id in a send's idempotency key (``<workflow id>/<step id>[#<fallback channel>]``)."""
    _, _, tail = idempotency_key.rpartition("/")
    return tail.partition("#")[0]


def goal_open(progress: Progress, now: datetime) -> bool:
    """Whether a goal event arriving ``now`` converts: the window is open and no conversion yet."""
    until = parse_timestamp(progress.goal_until) if progress.goal_until else None
    return progress.converted_at is None and until is not None and now <= until


def record_conversion(journey: JourneySnapshot, progress: Progress, event_id: str, now: datetime, label: str) -> None:
    progress.converted_at = now.isoformat()
    progress.conversion_event_id = event_id
    _count("eventflow_journey_conversions", "Journey instances that reached their goal.", journey, arm=label)


def record_finish(journey: JourneySnapshot, progress: Progress, exit_reason: str | None, label: str) -> None:
    progress.exited = exit_reason
    _count("eventflow_journey_exits", "Journey instances finished, by how.", journey, arm=label,
           how="exited" if exit_reason else "completed")


def goal_deadline(progress: Progress) -> datetime | None:
    """When the instance stops waiting for its goal after the steps end; None: it does not wait."""
    if progress.converted_at is not None or not progress.goal_until:
        return None
    return parse_timestamp(progress.goal_until)
