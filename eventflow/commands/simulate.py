"""Runs one journey against a file of events on Temporal's time-skipping test server.

The real interpreter runs on an in-process worker whose ``send_notification`` activity renders
and records each message instead of delivering it. Events are delivered at their ``occurred_at``
offset from the first event that starts the journey, and timers in between are skipped, so a
two-week journey simulates in seconds. The result is a timeline: offset, step, what would be
sent to whom (addresses masked).
"""

from __future__ import annotations

import json
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.worker import Worker

from activities.contact import ContactPoints, resolve_recipient
from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import SendStatus
from activities.rendering import TemplateRenderError, render_async
from activities.send import SEND_NOTIFICATION
from activities.webhook import WEBHOOK_CALL, WebhookCallInput, WebhookCallResult
from core.errors import EventflowError
from core.logs import mask_contact_details
from core.temporal_client import build_runtime
from events.event_file import EventFileError, derived_event_id, read_event_file
from events.model import CustomerEvent
from journeys.model import JourneyDefinition
from journeys.routing import Router, SignalJourney, StartJourney
from journeys.steps import StepKind

if TYPE_CHECKING:
    from events.schemas import SchemaSet


class SimulationError(EventflowError):
    """The simulation could not run: bad events file, unknown journey, no starting event."""


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline; ``local`` is the simulated wall clock in the customer's time zone."""

    offset: timedelta
    step: str
    what: str
    local: str = ""


@dataclass(frozen=True)
class _EventProfile:
    """The `activities.contact.ContactDirectory` of a simulation: one fixed set of contact points."""

    points: ContactPoints

    async def contact_points(self, customer_id: str) -> ContactPoints:
        return self.points


class _Recorder:
    """The ``send_notification`` activity of a simulation: renders and records, delivers nothing."""

    def __init__(self) -> None:
        self.origin: datetime | None = None
        self.entries: list[TimelineEntry] = []

    @activity.defn(name=SEND_NOTIFICATION)
    async def send_notification(self, notification: SendNotificationInput) -> SendResult:
        customer = notification.customer
        # A simulation has no profile store: the event's own customer block stands in for the profile.
        recipient = await resolve_recipient(_EventProfile(ContactPoints(
            email=customer.email, phone=customer.phone, whatsapp=customer.whatsapp, first_name=customer.first_name,
            timezone=customer.timezone, locale=customer.locale, attributes=dict(customer.attributes))), notification)
        address = recipient.address if recipient is not None else None
        notification = recipient.notification if recipient is not None else notification
        try:
            text = await render_async(notification.template_id,
                                      notification.subject_template or notification.body_template,
                                      notification.context)
        except TemplateRenderError as exc:
            text = f"<render error: {exc.problem}>"
        first_line = text.splitlines()[0] if text else ""
        at = activity.info().current_attempt_scheduled_time
        self.entries.append(TimelineEntry(
            offset=at - self.origin if self.origin else timedelta(),
            step=notification.step_id,
            what=(f"send {notification.channel} {notification.template_id}/{notification.locale} to "
                  f"{mask_contact_details(address or '<no address>')}: {first_line!r}"),
        ))
        return SendResult(status=SendStatus.SENT, provider="simulation")

    @activity.defn(name=WEBHOOK_CALL)
    async def call_webhook(self, call: WebhookCallInput) -> WebhookCallResult:
        """A simulation calls no other system: the step is recorded and answers with no data."""
        at = activity.info().current_attempt_scheduled_time
        self.entries.append(TimelineEntry(offset=at - self.origin if self.origin else timedelta(), step=call.step_id,
                                          what=f"webhook {call.method} {call.url_template} (not called)"))
        return WebhookCallResult(status_code=200)


def read_events(path: Path) -> list[CustomerEvent]:
    """Reads a JSON Lines file of events (the ``eventflow produce --file`` format), checked against Avro.

    A line without ``event_id`` gets the id ``produce`` would give it (`events.event_file.derived_event_id`).
    """
    from events.codec import EventDecoder
    from events.producer import InvalidRecordError, encode_event
    from events.schemas import load as load_schemas

    schemas = load_schemas()
    decode = EventDecoder(schemas)
    events: list[CustomerEvent] = []
    try:
        lines = read_event_file(path)
    except EventFileError as exc:
        raise SimulationError("\n".join(exc.problems)) from exc
    for line in lines:
        try:
            events.append(decode(encode_event(line.event, schemas)))
        except InvalidRecordError as exc:
            raise SimulationError(f"{line.where}: not a valid event: {exc.problem}") from exc
    return events


def decode_event(text: str, where: str, schemas: SchemaSet | None = None) -> CustomerEvent:
    """One event's JSON, checked against Avro; ``where`` names it in errors.

    A missing ``event_id`` is derived from the content, as ``produce`` and `read_events` derive it.
    """
    from events.codec import EventDecoder, encode_single_object, record_from_json
    from events.schemas import load as load_schemas

    schemas = schemas or load_schemas()
    try:
        raw = json.loads(text)
        raw.setdefault("event_id", derived_event_id(raw))
        return EventDecoder(schemas)(encode_single_object(record_from_json(raw), schemas))
    except (ValueError, KeyError, TypeError, AttributeError, EventflowError) as exc:
        raise SimulationError(f"{where}: not a valid event: {exc}") from exc


def _when(event: CustomerEvent) -> datetime:
    return datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))


def format_offset(offset: timedelta) -> str:
    """``+2d 03:04:05`` style offsets for the timeline."""
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{days}d {hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class SimulationRun:
    """A simulation's timeline, the step ids it visited in order, and whether it ran to the end."""

    timeline: list[TimelineEntry]
    path: tuple[str, ...]
    finished: bool


async def simulate(definition: JourneyDefinition, events: Sequence[CustomerEvent]) -> list[TimelineEntry]:
    """Runs ``definition`` on the time-skipping server, delivering ``events``; returns the timeline."""
    return (await simulate_run(definition, events)).timeline


async def simulate_run(definition: JourneyDefinition, events: Sequence[CustomerEvent]) -> SimulationRun:
    """`simulate`, also returning the path taken (for ``journeys simulate --diagram``)."""
    from temporalio.testing import WorkflowEnvironment

    from devstack.provision import TEST_SERVER_STARTUP, test_server
    from workflows.journey import EVENT_SIGNAL, JOURNEY_WORKFLOW, JourneyInput, JourneyStatus, JourneyWorkflow
    from workflows.worker import with_send_queues

    router = Router([definition])
    start: tuple[CustomerEvent, StartJourney] | None = None
    entries: list[TimelineEntry] = []
    for event in events:
        starts = [a for a in router.route(event) if isinstance(a, StartJourney)]
        if starts:
            start = (event, starts[0])
            break
    if start is None:
        raise SimulationError(f"no event in the file starts {definition.id} "
                              f"(trigger {definition.trigger_event}, filter {definition.trigger_filter!r})")
    trigger, action = start
    recorder = _Recorder()
    # The SDK core's lines (the test server's "Temporal Server 1.16.0 or newer is required") go through
    # Python logging, which a command keeps quiet, instead of coloured text on the terminal.
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server()), test_server_startup_timeout=TEST_SERVER_STARTUP,
        runtime=build_runtime())
    try:
        task_queue = f"simulate-{uuid.uuid4().hex[:8]}"
        async with with_send_queues(env.client, task_queue,
                                    Worker(env.client, task_queue=task_queue, workflows=[JourneyWorkflow],
                                           activities=[recorder.send_notification, recorder.call_webhook]),
                                    [recorder.send_notification]):
            handle = await env.client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput.starting(action.snapshot, trigger), id=action.workflow_id,
                task_queue=task_queue, result_type=JourneyStatus)
            origin = (await handle.describe()).start_time
            recorder.origin = origin
            entries.append(TimelineEntry(timedelta(), "-", f"start {action.workflow_id} on {trigger.event_type} "
                                                             f"(version {definition.version})"))
            for event in events[events.index(trigger) + 1:]:
                wait = (_when(event) - _when(trigger)) - (await env.get_current_time() - origin)
                if wait > timedelta():
                    await env.sleep(wait)
                offset = await env.get_current_time() - origin
                targets = [a for a in router.route(event)
                           if isinstance(a, SignalJourney) and a.workflow_id == action.workflow_id]
                if not targets:
                    entries.append(TimelineEntry(offset, "-", f"event {event.event_type}: not for this instance"))
                    continue
                try:
                    await handle.signal(EVENT_SIGNAL, event)
                    entries.append(TimelineEntry(offset, "-", f"event {event.event_type} delivered"))
                except Exception as exc:  # noqa: BLE001 - a finished instance rejects signals; show, go on
                    entries.append(TimelineEntry(offset, "-", f"event {event.event_type} not delivered: "
                                                              f"{type(exc).__name__}"))
            status: JourneyStatus = await handle.result()
    finally:
        await env.shutdown()
    for visit in status.trail:
        if visit.kind is StepKind.SEND:
            continue  # the recorder's line says more
        at = datetime.fromisoformat(visit.at) - origin
        note = f" ({visit.note})" if visit.note else ""
        entries.append(TimelineEntry(at, visit.step_id, f"{visit.kind}{note}"))
    entries.extend(recorder.entries)
    end = max((e.offset for e in entries), default=timedelta())
    ending = f"exit: {status.exit_reason}" if status.exit_reason else "finished"
    entries.append(TimelineEntry(end, "-", f"{ending}; {len(status.sends)} send(s)"))
    zone = _zone(trigger.customer.timezone)
    timeline = [replace(e, local=(origin + e.offset).astimezone(zone).strftime("%a %H:%M"))
                for e in sorted(entries, key=lambda e: e.offset)]
    return SimulationRun(timeline, tuple(visit.step_id for visit in status.trail), status.exit_reason is None)


def _zone(name: str) -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC
