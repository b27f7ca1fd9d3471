"""Every record the handler finishes gets one consumer span that continues the record's trace."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumer.record import SourceRecord
from core import tracing
from events import samples
from tests.consumer.test_handler import _json, _parts, _record, _run

TRACE_ID, PARENT_ID = secrets.token_hex(16), secrets.token_hex(8)


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    traced = TracerProvider()
    traced.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(traced):
        yield exporter


def _traced(record: SourceRecord) -> SourceRecord:
    return replace(record, headers=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode()),))


RECORDS = {
    "routed": lambda: _json(samples.purchase(samples.customer())),
    "unrouted": lambda: _json(samples.event("OrderShipped", samples.customer(), {
        "order_id": "ord-1", "carrier": "dhl", "tracking_number": "t-1", "estimated_delivery_at": None})),
    "dead-lettered": lambda: b"\xff\xfe",
}
OUTCOMES = {"routed": "started", "unrouted": "unrouted", "dead-lettered": "dead_lettered"}


@pytest.mark.parametrize("kind", list(RECORDS))
async def test_each_record_gets_one_consumer_span_in_the_upstream_trace(
        exported: InMemorySpanExporter, kind: str) -> None:
    await _run(_parts(), _traced(_record(RECORDS[kind]())))

    spans = exported.get_finished_spans()
    [consume] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert consume.name == "events process"
    assert consume.attributes is not None and consume.attributes[tracing.OUTCOME] == OUTCOMES[kind]
    assert consume.parent is not None and format(consume.parent.span_id, "016x") == PARENT_ID
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}


async def test_each_routed_action_gets_a_route_span_under_the_record(exported: InMemorySpanExporter) -> None:
    parts = _parts()
    await _run(parts, _traced(_record(RECORDS["routed"]())))

    spans = exported.get_finished_spans()
    [consume] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    routes = [s for s in spans if s.name.startswith("route ")]
    assert len(routes) == len(parts.dispatcher.applied) > 0
    assert all(s.parent is not None and s.parent.span_id == consume.context.span_id for s in routes)
    assert {s.attributes[tracing.WORKFLOW_ID] for s in routes if s.attributes} == {
        workflow_id for _, workflow_id in parts.dispatcher.applied}

