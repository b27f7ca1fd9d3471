"""Latency observations carry the trace they belong to (an exemplar), and /metrics serves them to a
scraper that asks for OpenMetrics, the only format that carries exemplars."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Histogram

from core import tracing
from core.http import OpsServer

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_active_trace_becomes_the_exemplar_and_nothing_when_tracing_is_off() -> None:
    provider = TracerProvider()
    assert tracing.exemplar() is None
    with tracing.installed(provider):
        with provider.get_tracer("t").start_as_current_span("send") as span:
            assert tracing.exemplar() == {"trace_id": format(span.get_span_context().trace_id, "032x")}
        assert tracing.exemplar() is None  # no span active


def test_a_records_upstream_trace_is_its_exemplar_when_tracing_is_on() -> None:
    headers = [("traceparent", UPSTREAM.encode())]
    assert tracing.exemplar_from(headers) is None  # tracing off: no cost, no exemplar
    with tracing.installed(TracerProvider()):
        assert tracing.exemplar_from(headers) == {"trace_id": "0af7651916cd43dd8448eb211c80319c"}
        assert tracing.exemplar_from([]) is None


async def _get(port: int, accept: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    content_type = next(line.split(":", 1)[1].strip() for line in head.splitlines()
                        if line.lower().startswith("content-type:"))
    return content_type, body


async def test_metrics_serve_exemplars_to_an_openmetrics_scraper_only() -> None:
    registry = CollectorRegistry()
    latency = Histogram("eventflow_test_seconds", "Test latency.", registry=registry)
    latency.observe(0.2, exemplar={"trace_id": "0af7651916cd43dd8448eb211c80319c"})
    server = OpsServer(registry, _ready, host="127.0.0.1", port=0)
    await server.start()
    try:
        kind, body = await _get(server.port, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        assert kind.startswith("application/openmetrics-text")
        assert '# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.2' in body
        kind, body = await _get(server.port, "text/plain")
        assert kind.startswith("text/plain") and "trace_id" not in body
        assert "eventflow_test_seconds_count 1.0" in body
    finally:
        await server.stop()


async def _ready() -> tuple[bool, str]:
    return True, "ok"
