"""What happens to one record: decode, route, dispatch, dead-letter; the result is a `HandlerResult`.

The handler knows nothing of polling, offsets or ordering. It is split in two so the hot path
stays cheap: `RecordHandler.prepare` runs on the poll loop for every record (decode and route,
no I/O; events nobody listens to end there), and `RecordHandler.handle` runs the rest as a task in
the record's key order. Every exception is classified: transient ones are retried by the
`Retrier` until they pass, the record's faults and unexpected exceptions are dead-lettered with
their type and message. ``handle`` itself never raises (except cancellation).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from temporalio.service import RPCError

from consumer.dispatch import Outcome
from consumer.metrics import ConsumerMetrics
from consumer.record import DeadLettered, Handled, HandlerResult, SourceRecord, Unrouted
from consumer.retry import TRANSIENT_ERRORS, Retrier
from consumer.routes import Route
from core import tracing
from events.codec import decode_error_type
from events.errors import DecodeError, RegistryUnavailableError
from events.model import CustomerEvent, Decoded, Unwanted
from events.sources import RecordDecoder
from journeys.segment_events import RESERVED_EVENT_TYPES

log = structlog.get_logger(__name__)

#: Most characters of an exception message kept as a dead-letter reason.
MAX_REASON_CHARS = 1000
#: Outcomes of the customer-store actions, logged at debug; journey outcomes stay at info.
_STATE_OUTCOMES = frozenset({Outcome.PREFERENCES_UPDATED, Outcome.DEVICES_UPDATED, Outcome.SEGMENTS_OBSERVED})
#: Most distinct (topic, event type) labels for unrouted events: sources name types as publishers write
#: them, so past this bound the rest are counted as ``other``.
MAX_UNROUTED_LABELS = 200
OTHER_EVENT_TYPE = "other"


@functools.lru_cache(maxsize=4 * MAX_UNROUTED_LABELS)
def _unrouted(event_type: str) -> Unrouted:
    """The (immutable) result of an event nobody listens to: one per type, not one per record."""
    return Unrouted(event_type)


class ActionDispatcher(Protocol):
    """Applies one routed action to Temporal (`consumer.dispatch.Dispatcher`)."""

    async def apply(self, event: CustomerEvent, action: Route) -> Outcome: ...


class EventRouter(Protocol):
    """Maps an event to actions (`consumer.routes.EventRoutes`)."""

    @property
    def event_types(self) -> frozenset[str]: ...

    def route(self, event: CustomerEvent) -> list[Route]: ...


@dataclass(frozen=True)
class DeadLetterReceipt:
    """Where a dead letter is: its dead-letter partition and offset; ``deduplicated`` if written earlier."""

    partition: int
    offset: int
    deduplicated: bool = False


class DeadLetterSink(Protocol):
    """Writes a record to the dead-letter topic at most once per source offset (`DeadLetterLedger`)."""

    async def dead_letter(self, record: SourceRecord, error_type: str, reason: str) -> DeadLetterReceipt: ...


@dataclass(frozen=True)
class Failure:
    """Why a record must be dead-lettered: a bounded error type and an exact reason."""

    error_type: str
    reason: str
    event_type: str = "unknown"


@dataclass(frozen=True)
class Job:
    """A record that needs work in key order, with what `RecordHandler.prepare` already knows.

    ``event`` None and no ``failure``: decode when its turn comes (a registry lookup, off the loop).
    """

    record: SourceRecord
    event: CustomerEvent | None = None
    routes: tuple[Route, ...] = ()
    failure: Failure | None = None


def unexpected_failure(stage: str, exc: BaseException, event_type: str = "unknown") -> Failure:
    """A failure naming the exception's type and message and the stage that raised it."""
    return Failure(type(exc).__name__, f"{stage} raised {type(exc).__name__}: {str(exc)[:MAX_REASON_CHARS]}",
                   event_type)


@dataclass
class RecordHandler:
    """Decodes, routes and dispatches one record; dead-letters what cannot be handled."""

    decoder: RecordDecoder
    router: EventRouter
    dispatcher: ActionDispatcher
    dead_letters: DeadLetterSink
    retrier: Retrier
    metrics: ConsumerMetrics
    _unrouted: dict[tuple[str, str], Counter] = field(default_factory=dict, init=False, repr=False)

    # -- on the poll loop ----------------------------------------------------------------------

    def prepare(self, record: SourceRecord) -> Unrouted | Job:
        """Decodes and routes without I/O; an `Unrouted` record is done, a `Job` goes to `handle`.

        While tracing is on, a record that ends here gets its consumer span too (`handle` makes the
        others'), timed from the start of this call.
        """
        tracer = tracing.tracer()
        if tracer is None:
            return self._prepare(record)
        started_ns = time.time_ns()
        prepared = self._prepare(record)
        if isinstance(prepared, Unrouted):
            tracer.start_span(_span_name(record), context=tracing.extract(record.headers), kind=SpanKind.CONSUMER,
                              attributes={**_record_attributes(record), tracing.OUTCOME: "unrouted",
                                          tracing.EVENT_TYPE: prepared.event_type},
                              start_time=started_ns).end()
        return prepared

    def _prepare(self, record: SourceRecord) -> Unrouted | Job:
        if self.decoder.needs_registry_for(record):
            return Job(record)
        try:
            decoded = self.decoder.decode_record(record, self.router.event_types)
        except DecodeError as exc:
            return Job(record, failure=self._decode_failure(exc, record))
        except RegistryUnavailableError:
            return Job(record)
        match decoded:
            case Unwanted(event_type=event_type):
                return _unrouted(event_type)
            case CustomerEvent() as event:
                routed = self._route(event)
                if isinstance(routed, Failure):
                    return Job(record, event, failure=routed)
                if not routed:
                    return Unrouted(event.event_type)
                return Job(record, event, routed)

    def count_unrouted(self, topic: str, event_type: str, records: int = 1) -> None:
        """Counts ``records`` unrouted records of ``event_type`` (past `MAX_UNROUTED_LABELS` types: ``other``)."""
        counter = self._unrouted.get((topic, event_type))
        if counter is None:
            if len(self._unrouted) >= MAX_UNROUTED_LABELS:
                event_type = OTHER_EVENT_TYPE
            counter = self._unrouted.get((topic, event_type))
        if counter is None:
            counter = self._unrouted[(topic, event_type)] = self.metrics.events_consumed.labels(
                topic, event_type, "unrouted")
        counter.inc(records)

    def count(self, topic: str, result: HandlerResult) -> None:
        """Counts a finished record in ``eventflow_events_consumed_total`` and friends."""
        match result:
            case Unrouted(event_type=event_type):
                self.count_unrouted(topic, event_type)
            case Handled(event_type=event_type, outcomes=outcomes):
                self.metrics.events_consumed.labels(topic, event_type, _summary(outcomes)).inc()
            case DeadLettered(error_type=error_type, event_type=event_type, deduplicated=deduplicated):
                self.metrics.events_consumed.labels(topic, event_type, "dead_lettered").inc()
                if deduplicated:
                    self.metrics.dead_letters_deduplicated.labels(topic).inc()
                else:
                    self.metrics.dead_letters.labels(topic, error_type).inc()

    # -- in key order ----------------------------------------------------------------------------

    async def handle(self, job: Job) -> HandlerResult:
        """Finishes a prepared record: handled, unrouted or dead-lettered; transient failures are retried.

        While tracing is on, the record is handled in a consumer span that continues the trace in its
        ``traceparent`` header (or starts one); Temporal's interceptor carries it into the journey.
        """
        record = job.record
        with tracing.span(_span_name(record), kind=SpanKind.CONSUMER, context=tracing.extract(record.headers),
                          attributes=_record_attributes(record)) as span:
            result = await self._handle(job)
            if span is not None:
                span.set_attribute(tracing.OUTCOME, _outcome_name(result))
                span.set_attribute(tracing.EVENT_TYPE, result.event_type)
            return result

    async def _handle(self, job: Job) -> HandlerResult:
        record, event, routes = job.record, job.event, job.routes
        if job.failure is not None:
            return await self._dead_letter(record, job.failure)
        if event is None:
            match await self._decode_off_loop(record):
                case Failure() as failure:
                    return await self._dead_letter(record, failure)
                case Unwanted(event_type=event_type):
                    return Unrouted(event_type)
                case CustomerEvent() as decoded:
                    event = decoded
            routed = self._route(event)
            if isinstance(routed, Failure):
                return await self._dead_letter(record, routed)
            routes = routed
            if not routes:
                return Unrouted(event.event_type)
        return await self._dispatch(record, event, routes)

    async def _decode_off_loop(self, record: SourceRecord) -> Decoded | Failure:
        decode = functools.partial(self.decoder.decode_record, record, self.router.event_types)
        try:
            return await self.retrier.call("decode", record, lambda: asyncio.to_thread(decode))
        except DecodeError as exc:
            return self._decode_failure(exc, record)
        except Exception as exc:  # noqa: BLE001 - decode_wanted promises DecodeError; anything else is still the record's end
            self.metrics.unexpected_failures.labels("decode").inc()
            return unexpected_failure("decode", exc)

    def _route(self, event: CustomerEvent) -> tuple[Route, ...] | Failure:
        if event.event_type in RESERVED_EVENT_TYPES:
            # Only Eventflow raises these (segment entries and exits): a record claiming one is forged.
            return Failure("ReservedEventTypeError", f"event type {event.event_type} is raised by Eventflow only",
                           event.event_type)
        try:
            return tuple(self.router.route(event))
        except Exception as exc:  # noqa: BLE001 - a journey expression that fails on this event: dead-letter it, keep going
            self.metrics.unexpected_failures.labels("route").inc()
            return unexpected_failure("route", exc, event.event_type)

    async def _dispatch(self, record: SourceRecord, event: CustomerEvent, routes: tuple[Route, ...]) -> HandlerResult:
        bound = log.bind(event_id=event.event_id, event_type=event.event_type)
        tracing.annotate({tracing.EVENT_ID: event.event_id, tracing.EVENT_TYPE: event.event_type})
        outcomes: list[Outcome] = []
        for route in routes:
            try:
                result = await self._apply(record, event, route)
            except RPCError as exc:
                return await self._dead_letter(record, Failure(
                    "TemporalRejectedError", f"{exc.status.name}: {exc.message}", event.event_type))
            except Exception as exc:  # noqa: BLE001 - not transient (the retrier passed it on): the record's end, not the loop's
                self.metrics.unexpected_failures.labels("dispatch").inc()
                return await self._dead_letter(record, unexpected_failure("dispatch", exc, event.event_type))
            outcomes.append(result)
            self._count_action(result, route.journey_id)
            # A write to the customer store, which most events make, at debug: at info it was half of the
            # consumer's lines, and the lines 12 % of its CPU in the bridge phase (py-spy).
            emit = bound.debug if result in _STATE_OUTCOMES else bound.info
            emit(f"journey_{result.value}", workflow_id=route.workflow_id)
        return Handled(event.event_type, tuple(outcomes))

    async def _apply(self, record: SourceRecord, event: CustomerEvent, route: Route) -> Outcome:
        with tracing.span(f"route {route.journey_id}", attributes={
                tracing.EVENT_ID: event.event_id, tracing.JOURNEY: route.journey_id,
                tracing.WORKFLOW_ID: route.workflow_id}) as span:
            result = await self.retrier.call("temporal", record, functools.partial(self.dispatcher.apply, event, route))
            if span is not None:
                span.set_attribute(tracing.OUTCOME, result.value)
            return result

    def _decode_failure(self, exc: DecodeError, record: SourceRecord) -> Failure:
        exc.at(record.topic, record.partition, record.offset)
        return Failure(decode_error_type(exc), exc.reason[:MAX_REASON_CHARS])

    async def _dead_letter(self, record: SourceRecord, failure: Failure) -> DeadLettered:
        write = functools.partial(self.dead_letters.dead_letter, record, failure.error_type, failure.reason)
        # Every failure of the dead-letter path is retried: the record must not end any other way.
        receipt = await self.retrier.call("dead_letter", record, _any_error_transient(write))
        log.warning("event_dead_lettered", topic=record.topic, partition=record.partition, offset=record.offset,
                    error_type=failure.error_type, reason=failure.reason, deduplicated=receipt.deduplicated,
                    dead_letter=f"{receipt.partition}:{receipt.offset}")
        return DeadLettered(failure.error_type, failure.reason, failure.event_type, receipt.deduplicated)

    def _count_action(self, outcome: Outcome, journey_id: str) -> None:
        match outcome:
            case Outcome.STARTED:
                self.metrics.workflow_starts.labels(journey_id).inc()
            case Outcome.DEDUPED:
                self.metrics.workflow_dedupes.labels(journey_id).inc()
            case Outcome.SIGNALLED | Outcome.PREFERENCES_UPDATED:
                self.metrics.workflow_signals.labels(journey_id, "delivered").inc()
            case Outcome.NO_INSTANCE:
                self.metrics.workflow_signals.labels(journey_id, "no_instance").inc()


class _DeadLetterPathError(OSError):
    """An unexpected failure of the dead-letter path, made transient so it is retried, not lost."""


def _any_error_transient(
        call: Callable[[], Awaitable[DeadLetterReceipt]]) -> Callable[[], Awaitable[DeadLetterReceipt]]:
    async def guarded() -> DeadLetterReceipt:
        try:
            return await call()
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise _DeadLetterPathError(f"{type(exc).__name__}: {exc}") from exc
    return guarded


def _span_name(record: SourceRecord) -> str:
    return f"{record.topic} process"


def _record_attributes(record: SourceRecord) -> dict[str, str | int]:
    """OpenTelemetry's messaging attributes of a consumed Kafka record."""
    return {"messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": record.topic, "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset}


def _outcome_name(result: HandlerResult) -> str:
    match result:
        case Handled(outcomes=outcomes):
            return _summary(outcomes)
        case Unrouted():
            return "unrouted"
        case DeadLettered():
            return "dead_lettered"


def _summary(outcomes: tuple[Outcome, ...]) -> str:
    """One bounded outcome label per event, the most consequential of its actions."""
    for outcome, label in ((Outcome.STARTED, "started"), (Outcome.DEDUPED, "deduped"),
                           (Outcome.SIGNALLED, "signalled"), (Outcome.PREFERENCES_UPDATED, "signalled"),
                           (Outcome.DEVICES_UPDATED, "devices_updated")):
        if outcome in outcomes:
            return label
    return "no_instance"
