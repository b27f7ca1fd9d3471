"""The record handler without servers: every record ends handled, unrouted or dead-lettered, once.

The dispatcher and the dead-letter sink are small fakes of Eventflow's own protocols
(`ActionDispatcher`, `DeadLetterSink`); decoding and routing are the real ones.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from fastavro import schemaless_writer
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture
from temporalio.service import RPCError, RPCStatusCode

from consumer import handler as handler_module
from consumer.dispatch import Outcome, TransientTemporalError
from consumer.handler import DeadLetterReceipt, Job, RecordHandler
from consumer.metrics import ConsumerMetrics
from consumer.record import DeadLettered, Handled, SourceRecord, Unrouted
from consumer.retry import Retrier, RetryPolicy
from consumer.routes import EventRoutes, Route
from events import samples
from events.codec import EventDecoder, record_from_json
from events.model import CustomerEvent
from events.schemas import ParsedSchema, SchemaSet
from events.schemas import load as load_schemas
from journeys.loader import load_all
from journeys.routing import StartJourney

FAST = RetryPolicy(initial_seconds=0.001, maximum_seconds=0.001)


@dataclass
class FakeDispatcher:
    """Applies actions by recording them; raises the queued exceptions first."""

    failures: list[BaseException] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)

    async def apply(self, event: CustomerEvent, action: Route) -> Outcome:
        if self.failures:
            raise self.failures.pop(0)
        self.applied.append((event.event_id, action.workflow_id))
        return Outcome.STARTED


@dataclass
class FakeSink:
    """A dead-letter topic in a list; raises the queued exceptions first."""

    failures: list[BaseException] = field(default_factory=list)
    written: list[tuple[SourceRecord, str, str]] = field(default_factory=list)

    async def dead_letter(self, record: SourceRecord, error_type: str, reason: str) -> DeadLetterReceipt:
        if self.failures:
            raise self.failures.pop(0)
        self.written.append((record, error_type, reason))
        return DeadLetterReceipt(0, len(self.written) - 1)


class ExplodingRouter(EventRoutes):
    """A journey whose filter raises on every event, as ``payload.total in customer`` did."""

    def route(self, event: CustomerEvent) -> list[Route]:
        raise TypeError("unhashable type: 'dict'")


@dataclass
class Parts:
    handler: RecordHandler
    dispatcher: FakeDispatcher
    sink: FakeSink
    metrics: ConsumerMetrics

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def _parts(*, decoder: EventDecoder | None = None, router: EventRoutes | None = None) -> Parts:
    metrics = ConsumerMetrics(CollectorRegistry())
    dispatcher, sink = FakeDispatcher(), FakeSink()
    handler = RecordHandler(decoder=decoder or EventDecoder(load_schemas(), default_encoding="json"),
                            router=router or EventRoutes(load_all()), dispatcher=dispatcher, dead_letters=sink,
                            retrier=Retrier(FAST, metrics), metrics=metrics)
    return Parts(handler, dispatcher, sink, metrics)


def _record(value: bytes, offset: int = 5) -> SourceRecord:
    return SourceRecord("events", 1, offset, b"key", value)


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def _run(parts: Parts, record: SourceRecord) -> Handled | Unrouted | DeadLettered:
    prepared = parts.handler.prepare(record)
    return prepared if isinstance(prepared, Unrouted) else await parts.handler.handle(prepared)


async def test_a_routed_event_is_handled() -> None:
    parts = _parts()
    event = samples.purchase(samples.customer())
    result = await _run(parts, _record(_json(event)))
    routes = EventRoutes(load_all()).route(EventDecoder(load_schemas(), default_encoding="json")(_json(event)))
    assert result == Handled("PurchaseCompleted", (Outcome.STARTED,) * len(routes))
    assert parts.dispatcher.applied == [(event["event_id"], r.workflow_id) for r in routes]
    assert parts.sink.written == []


async def test_journey_outcomes_are_logged_at_info_and_customer_store_writes_at_debug(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class StoreWrites(FakeDispatcher):
        async def apply(self, event: CustomerEvent, action: Route) -> Outcome:
            await super().apply(event, action)
            return Outcome.STARTED if isinstance(action, StartJourney) else Outcome.PREFERENCES_UPDATED

    parts = _parts()
    parts.handler.dispatcher = StoreWrites()
    event = samples.purchase(samples.customer(email="ada@example.com"))
    # The handler's logger at production's level, recording into a list whatever other tests configured.
    capture = LogCapture()
    monkeypatch.setattr(handler_module, "log", structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)))
    result = await _run(parts, _record(_json(event)))
    logs = capture.entries
    assert isinstance(result, Handled) and Outcome.PREFERENCES_UPDATED in result.outcomes
    levels = {(entry["event"], entry["log_level"]) for entry in logs}
    assert ("journey_started", "info") in levels
    assert ("journey_preferences_updated", "info") not in levels


async def test_an_event_nobody_listens_to_ends_at_prepare() -> None:
    parts = _parts()
    event = samples.event("OrderShipped", samples.customer(), {
        "order_id": "ord-1", "carrier": "dhl", "tracking_number": "t-1", "estimated_delivery_at": None})
    assert parts.handler.prepare(_record(_json(event))) == Unrouted("OrderShipped")


def _purchase_with(**changes: Any) -> bytes:
    event = samples.purchase(samples.customer())
    event.update(changes)
    return _json(event)


POISON = {
    "deep list": b"[" * 100_000,
    "deep object": b'{"a":' * 50_000,
    "event_type list": _purchase_with(event_type=["PurchaseCompleted"]),
    "huge amount": _purchase_with(payload={"order_id": "o", "cart_id": None, "items": [],
                                           "total": {"amount": "1e999999999", "currency": "EUR"}}),
    "NaN amount": _purchase_with(payload={"order_id": "o", "cart_id": None, "items": [],
                                          "total": {"amount": "NaN", "currency": "EUR"}}),
    "customer is a list": _purchase_with(customer=[1, 2]),
    "not JSON": b"\xff\xfe",
}


@pytest.mark.parametrize("value", list(POISON.values()), ids=list(POISON))
async def test_poison_is_dead_lettered_once_with_bytes_and_reason(value: bytes) -> None:
    parts = _parts()
    record = _record(value)
    result = await _run(parts, record)
    assert isinstance(result, DeadLettered)
    assert result.error_type == "InvalidEventError"
    assert [(r, t) for r, t, _ in parts.sink.written] == [(record, "InvalidEventError")]
    assert parts.sink.written[0][0].value == value
    assert parts.sink.written[0][2] == result.reason and result.reason
    assert parts.dispatcher.applied == []


async def test_a_router_exception_is_dead_lettered_with_its_type_and_message() -> None:
    parts = _parts(router=ExplodingRouter(load_all()))
    result = await _run(parts, _record(_json(samples.purchase(samples.customer()))))
    assert isinstance(result, DeadLettered)
    assert result.error_type == "TypeError"
    assert "route raised TypeError: unhashable type: 'dict'" in result.reason
    assert result.event_type == "PurchaseCompleted"
    assert parts.metric("eventflow_unexpected_failures_total", {"stage": "route"}) == 1


def _rpc(status: RPCStatusCode) -> RPCError:
    return RPCError("boom", status, b"")


async def test_transient_temporal_errors_are_retried_until_handled() -> None:
    parts = _parts()
    parts.dispatcher.failures = [TransientTemporalError("start", "wf", _rpc(RPCStatusCode.UNAVAILABLE))] * 3
    result = await _run(parts, _record(_json(samples.purchase(samples.customer()))))
    assert isinstance(result, Handled)
    assert parts.metric("eventflow_retries_total", {"operation": "temporal"}) == 3
    assert parts.sink.written == []


async def test_a_rejection_by_temporal_is_dead_lettered() -> None:
    parts = _parts()
    parts.dispatcher.failures = [_rpc(RPCStatusCode.INVALID_ARGUMENT)]
    result = await _run(parts, _record(_json(samples.purchase(samples.customer()))))
    assert isinstance(result, DeadLettered) and result.error_type == "TemporalRejectedError"


async def test_an_unexpected_dispatch_exception_is_dead_lettered_not_raised() -> None:
    parts = _parts()
    parts.dispatcher.failures = [KeyError("version")]
    result = await _run(parts, _record(_json(samples.purchase(samples.customer()))))
    assert isinstance(result, DeadLettered)
    assert result.error_type == "KeyError" and "dispatch raised KeyError" in result.reason
    assert len(parts.sink.written) == 1


@pytest.mark.parametrize("failure", [TimeoutError("no ack"), BufferError("queue full"), RuntimeError("bug")])
async def test_dead_letter_failures_are_retried_and_the_record_is_written_once(failure: BaseException) -> None:
    parts = _parts()
    parts.sink.failures = [failure, failure]
    result = await _run(parts, _record(b"\xff"))
    assert isinstance(result, DeadLettered)
    assert len(parts.sink.written) == 1
    assert parts.metric("eventflow_retries_total", {"operation": "dead_letter"}) == 2


class BlockingLookup:
    """A registry that answers only once the event loop says so: deadlocks if asked on the loop."""

    def __init__(self, schema: ParsedSchema) -> None:
        self.schema = schema
        self.release = threading.Event()
        self.asked = threading.Event()

    def is_cached(self, schema_id: int) -> bool:
        return False

    def __call__(self, schema_id: int, raw: bytes) -> ParsedSchema:
        self.asked.set()
        assert self.release.wait(10), "the loop never released the lookup: it was blocked"
        return self.schema


def _confluent(schemas: SchemaSet, event: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    body.write(b"\x00" + (7).to_bytes(4, "big"))
    schemaless_writer(body, schemas.envelope, record_from_json(event))
    return body.getvalue()


async def test_a_registry_lookup_runs_off_the_event_loop() -> None:
    schemas = load_schemas()
    lookup = BlockingLookup(schemas.envelope)
    parts = _parts(decoder=EventDecoder(schemas, lookup, default_encoding="registry"))
    event = samples.purchase(samples.customer())
    prepared = parts.handler.prepare(_record(_confluent(schemas, event)))
    assert isinstance(prepared, Job) and prepared.event is None  # decoding waits for its turn
    handling = asyncio.create_task(parts.handler.handle(prepared))
    # The loop keeps running while the lookup waits; only the loop can release it.
    while not lookup.asked.is_set():
        await asyncio.sleep(0.01)
    lookup.release.set()
    result = await handling
    assert isinstance(result, Handled)
    assert {e for e, _ in parts.dispatcher.applied} == {event["event_id"]}


def test_unrouted_event_type_labels_are_bounded() -> None:
    from consumer.handler import MAX_UNROUTED_LABELS, OTHER_EVENT_TYPE

    parts = _parts()
    extra = 25
    for index in range(MAX_UNROUTED_LABELS + extra):
        parts.handler.count("events", Unrouted(f"Type{index}"))
    parts.handler.count("events", Unrouted("Type0"))  # a known label keeps counting under its own name

    labels = {s.labels["event_type"]: s.value for m in parts.metrics.registry.collect()
              for s in m.samples if s.name == "eventflow_events_consumed_total" and s.labels.get("outcome") == "unrouted"}
    assert len(labels) == MAX_UNROUTED_LABELS + 1
    assert labels[OTHER_EVENT_TYPE] == extra
    assert labels["Type0"] == 2
