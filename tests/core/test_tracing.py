"""One event, one trace: Kafka header -> consumer -> Temporal start -> journey -> send activity -> provider.

Real broker, real Temporal server, the SendGrid channel pointed at the provider stub. Spans are read
from an in-memory exporter, and once through the OTLP/HTTP exporter from a receiver the test runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.client import Client

from activities.email_sendgrid import SendGridChannel, SendGridConfig
from devstack import Endpoints
from core import tracing
from core.settings import TemporalSettings
from core.temporal_client import connect
from core.tracing import TracingSettings
from events import samples
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually, start_bridge
from workflows.worker import build_worker

__all__ = ["provider"]

EMAIL = "zebulon.trace@example.com"
PHONE = "+4915198765432"
FIRST_NAME = "Zebulon"
CONTACT_DETAILS = (EMAIL, PHONE, PHONE[1:], FIRST_NAME)

#: The spans one purchase event must produce, by name (the topic's consume span is added per test).
EXPECTED_SPANS = ("route post_purchase", "StartWorkflow:Journey", "RunWorkflow:Journey",
                  "StartActivity:send_notification", "RunActivity:send_notification", "sendgrid deliver")


@dataclass(frozen=True)
class Upstream:
    """The producer's span the event was published in."""

    trace_id: str
    span_id: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass(frozen=True)
class Flow:
    """What one traced event did."""

    upstream: Upstream
    topic: str
    workflow_id: str
    client: Client


def _upstream() -> Upstream:
    return Upstream(secrets.token_hex(16), secrets.token_hex(8))


async def _one_event(*, endpoints: Endpoints, kafka_config: dict[str, str], topic: str, outbox: Path,
                     unique: str, provider: ProviderStub, headers: Sequence[tuple[str, str | bytes | None]],
                     ) -> tuple[str, Client]:
    """Publishes one purchase event with ``headers`` and waits until the provider got its email."""
    client = await connect(TemporalSettings(address=endpoints.temporal_address, namespace="default",
                                            task_queue=f"test-journeys-{unique}"))
    bridge = await start_bridge(kafka_config=kafka_config, client=client, topic=topic, outbox=outbox,
                                suffix=unique, with_worker=False)
    sendgrid = SendGridChannel(SendGridConfig(api_key="SG.k", from_email="shop@example.com",
                                              base_url=provider.base_url, timeout_seconds=5))
    worker = build_worker(client, bridge.task_queue, {"email": sendgrid})
    customer = samples.customer(email=EMAIL, phone=PHONE, first_name=FIRST_NAME, locale="en")
    event = samples.purchase(customer)
    try:
        async with worker:
            bridge.producer.send(event, headers=list(headers))
            await bridge.producer.flush_async()
            await eventually(lambda: len(provider.sends()) == 1, message="the email at the provider")
    finally:
        await bridge.stop()
    return f"journey:post_purchase:{customer['id']}:{event['payload']['order_id']}", client


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    traced = TracerProvider()
    traced.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(traced):
        yield exporter
    traced.shutdown()


def _strings(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    yield str(span.status.description or "")
    for attributes in (span.attributes, *(e.attributes for e in span.events), *(link.attributes for link in span.links)):
        for key, value in (attributes or {}).items():
            yield f"{key}={value!s}"


async def test_one_event_makes_one_trace_across_every_hop_without_contact_details(
        exported: InMemorySpanExporter, endpoints: Endpoints, kafka_config: dict[str, str], topic: str,
        outbox: Path, unique: str, provider: ProviderStub) -> None:
    upstream = _upstream()
    workflow_id, _ = await _one_event(endpoints=endpoints, kafka_config=kafka_config, topic=topic, outbox=outbox,
                                      unique=unique, provider=provider,
                                      headers=[("traceparent", upstream.traceparent.encode())])
    await eventually(lambda: any(s.name == "sendgrid deliver" for s in exported.get_finished_spans()),
                     message="the provider call's span")

    spans = exported.get_finished_spans()
    names = [s.name for s in spans]
    for expected in (f"{topic} process", *EXPECTED_SPANS):
        assert expected in names, f"no {expected!r} span in {names}"
    assert {format(s.context.trace_id, "032x") for s in spans} == {upstream.trace_id}
    [consume] = [s for s in spans if s.name == f"{topic} process"]
    assert consume.parent is not None and format(consume.parent.span_id, "016x") == upstream.span_id
    assert consume.attributes is not None and consume.attributes[tracing.EVENT_TYPE] == "PurchaseCompleted"
    assert consume.attributes[tracing.OUTCOME] == "started"
    [deliver] = [s for s in spans if s.name == "sendgrid deliver"]
    assert deliver.attributes is not None
    assert deliver.attributes[tracing.PROVIDER] == "sendgrid" and deliver.attributes[tracing.OUTCOME] == "sent"
    assert deliver.attributes[tracing.WORKFLOW_ID] == workflow_id
    assert deliver.attributes[tracing.JOURNEY] == "post_purchase" and deliver.attributes[tracing.STEP]
    leaked = [(s.name, text) for s in spans for text in _strings(s) if any(c in text for c in CONTACT_DETAILS)]
    assert leaked == []


async def test_a_record_without_trace_context_starts_a_trace(
        exported: InMemorySpanExporter, endpoints: Endpoints, kafka_config: dict[str, str], topic: str,
        outbox: Path, unique: str, provider: ProviderStub) -> None:
    await _one_event(endpoints=endpoints, kafka_config=kafka_config, topic=topic, outbox=outbox, unique=unique,
                     provider=provider, headers=[])
    await eventually(lambda: any(s.name == "sendgrid deliver" for s in exported.get_finished_spans()),
                     message="the provider call's span")

    spans = exported.get_finished_spans()
    [consume] = [s for s in spans if s.name == f"{topic} process"]
    assert consume.parent is None
    assert {s.context.trace_id for s in spans} == {consume.context.trace_id}


class OtlpReceiver:
    """A local OTLP/HTTP traces endpoint: ``POST /v1/traces`` with a protobuf body."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1/traces"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        self.headers.append(dict(request.headers))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def spans(self) -> list[tuple[str, str, str]]:
        """(service name, trace id, span name) of every span received."""
        found: list[tuple[str, str, str]] = []
        for message in self.requests:
            for resource_spans in message.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    found.extend((service, s.trace_id.hex(), s.name) for s in scope_spans.spans)
        return found


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    await otlp.start()
    yield otlp
    await otlp.stop()


async def test_spans_reach_an_otlp_http_receiver(receiver: OtlpReceiver, endpoints: Endpoints,
                                                 kafka_config: dict[str, str], topic: str, outbox: Path,
                                                 unique: str, provider: ProviderStub) -> None:
    settings = TracingSettings(otlp_endpoint=receiver.url, otlp_headers={"x-collector-key": "k-123"})
    upstream = _upstream()
    with tracing.started(settings, "eventflow-test") as traced:
        assert traced is not None
        await _one_event(endpoints=endpoints, kafka_config=kafka_config, topic=topic, outbox=outbox, unique=unique,
                         provider=provider, headers=[("traceparent", upstream.traceparent)])
        # The exporter's HTTP call blocks: flush off the loop, which also serves the receiver.
        assert await asyncio.to_thread(traced.force_flush, 30_000)

    received = receiver.spans()
    names = {name for _, trace_id, name in received if trace_id == upstream.trace_id}
    assert {f"{topic} process", *EXPECTED_SPANS} <= names
    assert {service for service, _, _ in received} == {"eventflow-test"}
    assert all(headers.get("x-collector-key") == "k-123" for headers in receiver.headers)


def _exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "otel" in t.name.lower() or "span" in t.name.lower()]


async def test_tracing_off_adds_no_interceptor_header_or_thread(
        endpoints: Endpoints, kafka_config: dict[str, str], topic: str, outbox: Path, unique: str,
        provider: ProviderStub) -> None:
    assert tracing.tracer() is None
    threads = _exporter_threads()
    with tracing.started(tracing.load_tracing_settings({}), "eventflow-test") as traced:
        assert traced is None
        upstream = _upstream()
        workflow_id, client = await _one_event(
            endpoints=endpoints, kafka_config=kafka_config, topic=topic, outbox=outbox, unique=unique,
            provider=provider, headers=[("traceparent", upstream.traceparent)])
    assert client.config()["interceptors"] == []
    assert _exporter_threads() == threads
    # With tracing on, Temporal's interceptor writes the trace into the start's headers; off, nothing.
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert "_tracer-data" not in started.header.fields


async def test_tracing_on_carries_the_trace_in_the_workflow_start_header(
        exported: InMemorySpanExporter, endpoints: Endpoints, kafka_config: dict[str, str], topic: str,
        outbox: Path, unique: str, provider: ProviderStub) -> None:
    """The counterpart of the test above, so its header check cannot pass vacuously."""
    workflow_id, client = await _one_event(endpoints=endpoints, kafka_config=kafka_config, topic=topic,
                                           outbox=outbox, unique=unique, provider=provider, headers=[])
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert "_tracer-data" in started.header.fields


def test_tracing_off_never_imports_the_sdk() -> None:
    """The consumer's and worker's code paths load only the API while tracing is off."""
    code = ("import sys; import eventflow.cli, eventflow.consume, eventflow.worker; from core import tracing\n"
            "with tracing.started(tracing.load_tracing_settings({}), 'x') as p: assert p is None\n"
            "assert tracing.temporal_interceptors() == []\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')"
            " or m.startswith('opentelemetry.exporter') or m == 'temporalio.contrib.opentelemetry'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


async def test_eventflow_produce_writes_the_trace_context_of_its_exported_span(
        receiver: OtlpReceiver, kafka_config: dict[str, str], topic: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from eventflow.cli import main
    from tests.harness import read_topic

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(samples.purchase(samples.customer(email=EMAIL, phone=PHONE))) + "\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_OTLP_ENDPOINT", receiver.url)
    # main() blocks (it flushes the producer and the exporter): off the loop that serves the receiver.
    assert await asyncio.to_thread(main, ["produce", "--file", str(events), "--topic", topic]) == 0

    [record] = await asyncio.to_thread(read_topic, kafka_config, topic, expected=1)
    headers = dict(record.headers() or [])
    traceparent = headers["traceparent"]
    assert isinstance(traceparent, bytes)
    version, trace_id, _, flags = traceparent.decode().split("-")
    assert version == "00" and int(flags, 16) & 1, "a sampled W3C trace context"
    assert (("eventflow-produce", trace_id, f"{topic} publish")) in receiver.spans()


def _decision_under_a_forced_upstream(upstream: str) -> bool:
    """Whether a record whose producer set ``traceparent ...-01`` is traced, at a sample ratio of 0."""
    settings = TracingSettings.load({"EVENTFLOW_OTLP_ENDPOINT": "http://collector:4318/v1/traces",
                                     "EVENTFLOW_TRACE_SAMPLE_RATIO": "0",
                                     "EVENTFLOW_TRACE_UPSTREAM_SAMPLING": upstream})
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    trace_id = int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    result = tracing.sampler(settings).should_sample(parent, trace_id, "consume")
    return result.decision is Decision.RECORD_AND_SAMPLE


def test_a_producer_forces_sampling_only_while_upstream_sampling_is_respected() -> None:
    assert _decision_under_a_forced_upstream("respect") is True
    assert _decision_under_a_forced_upstream("ratio") is False
    assert TracingSettings.load({}).upstream_sampling == "respect"
