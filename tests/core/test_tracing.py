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
from typing import Any

import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.client import Client
from temporalio.worker import Replayer

from activities.email_sendgrid import SendGridChannel, SendGridConfig
from core import tracing
from core._temporal_tracing import EventflowTracingInterceptor
from core.settings import TemporalSettings, TracingSettings
from core.temporal_client import connect
from devstack import Endpoints
from events import samples
from journeys.loader import validate_folder
from journeys.model import JourneyDefinition
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually, start_bridge
from workflows.journey import JourneyWorkflow
from workflows.preferences import RESERVE_SEND_UPDATE
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


SHIP_NOTICE = """
id: ship_notice
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: once_per_key, key: payload.order_id}
steps:
  - id: confirm
    send: {channel: email, template: notice}
  - id: wait_ship
    wait_for:
      event: OrderShipped
      timeout: 1h
      received:
        - id: shipped
          send: {channel: email, template: notice}
"""


def _ship_notice(folder: Path) -> tuple[JourneyDefinition, ...]:
    (folder / "definitions").mkdir(parents=True)
    (folder / "templates").mkdir()
    (folder / "definitions" / "ship_notice.yaml").write_text(SHIP_NOTICE)
    template = {"id": "notice", "default_locale": "en", "channels": {"email": {"en": {
        "subject": "Order {{ payload.order_id }}", "body": "Hi {{ customer.first_name }}"}}}}
    (folder / "templates" / "notice.yaml").write_text(yaml.safe_dump(template))
    report = validate_folder(folder)
    assert report.problems == ()
    return report.definitions


def _trace_of(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def _linked_traces(span: ReadableSpan) -> set[str]:
    return {format(link.context.trace_id, "032x") for link in span.links}


def _route(spans: Sequence[ReadableSpan], trace_id: str) -> str | None:
    """The outcome of the journey's ``route`` span in ``trace_id`` (None before the consumer finished it)."""
    outcomes = [s.attributes[tracing.OUTCOME] for s in spans if s.name == "route ship_notice" and s.attributes
                and _trace_of(s) == trace_id]
    return str(outcomes[0]) if outcomes else None


@pytest.mark.parametrize("arrives", ["while_waiting", "before_the_wait"])
async def test_an_event_that_wakes_a_running_journey_traces_what_it_causes_in_its_own_trace(
        exported: InMemorySpanExporter, endpoints: Endpoints, kafka_config: dict[str, str], topic: str,
        outbox: Path, unique: str, provider: ProviderStub, tmp_path: Path, arrives: str) -> None:
    """Purchase (trace A) starts the journey; the shipment (trace B) ends its wait and causes a send.

    ``before_the_wait``: both events reach Temporal before any worker runs, so the shipment is held
    by the instance and taken only when the interpreter reaches its wait, after the first send.
    """
    purchase_trace, shipped_trace = _upstream(), _upstream()
    client = await connect(TemporalSettings(address=endpoints.temporal_address, namespace="default",
                                            task_queue=f"test-journeys-{unique}"))
    bridge = await start_bridge(kafka_config=kafka_config, client=client, topic=topic, outbox=outbox,
                                suffix=unique, with_worker=False, definitions=_ship_notice(tmp_path))
    sendgrid = SendGridChannel(SendGridConfig(api_key="SG.k", from_email="shop@example.com",
                                              base_url=provider.base_url, timeout_seconds=5))
    worker = build_worker(client, bridge.task_queue, {"email": sendgrid})
    customer = samples.customer(email=EMAIL, phone=PHONE, first_name=FIRST_NAME, locale="en")
    purchase = samples.purchase(customer)
    order_id = purchase["payload"]["order_id"]
    shipped = samples.event("OrderShipped", customer, {"order_id": order_id, "carrier": "DHL",
                                                       "tracking_number": "T-1", "estimated_delivery_at": None})
    handle = client.get_workflow_handle(f"journey:ship_notice:{customer['id']}:{order_id}")

    async def publish(event: dict[str, Any], upstream: Upstream, outcome: str) -> None:
        bridge.producer.send(event, headers=[("traceparent", upstream.traceparent.encode())])
        await bridge.producer.flush_async()
        await eventually(lambda: _route(exported.get_finished_spans(), upstream.trace_id) == outcome,
                         message=f"the consumer's {outcome} route span")

    async def waiting() -> bool:
        return (await handle.query(JourneyWorkflow.status)).current_step == "wait_ship"

    try:
        if arrives == "before_the_wait":
            await publish(purchase, purchase_trace, "started")
            await publish(shipped, shipped_trace, "signalled")
        async with worker:
            if arrives == "while_waiting":
                await publish(purchase, purchase_trace, "started")
                await eventually(lambda: len(provider.sends()) == 1, message="the confirmation at the provider")
                await eventually(waiting, message="the journey waiting for the shipment")
                await publish(shipped, shipped_trace, "signalled")
            await eventually(lambda: len(provider.sends()) == 2, message="the shipment's email at the provider")
            await asyncio.wait_for(handle.result(), timeout=30)
    finally:
        await bridge.stop()
    await eventually(lambda: sum(s.name == "sendgrid deliver" for s in exported.get_finished_spans()) == 2,
                     message="both provider calls' spans")

    spans = exported.get_finished_spans()
    in_shipped = [s for s in spans if _trace_of(s) == shipped_trace.trace_id]
    names = {s.name for s in in_shipped}
    for expected in (f"{topic} process", "route ship_notice", "SignalWorkflow:event", "HandleSignal:event",
                     "StartActivity:send_notification", "RunActivity:send_notification", "sendgrid deliver",
                     f"HandleUpdate:{RESERVE_SEND_UPDATE}"):
        assert expected in names, f"no {expected!r} span in the shipment's trace: {sorted(names)}"
    delivers = {_trace_of(s): s.attributes[tracing.STEP] for s in spans if s.name == "sendgrid deliver" and s.attributes}
    assert delivers == {purchase_trace.trace_id: "confirm", shipped_trace.trace_id: "shipped"}
    # What happened in the running journey's workflow keeps a link to the trace the journey runs in.
    for name in ("HandleSignal:event", "StartActivity:send_notification"):
        [linked] = [s for s in in_shipped if s.name == name]
        assert _linked_traces(linked) == {purchase_trace.trace_id}, name
    [signal] = [s for s in in_shipped if s.name == "SignalWorkflow:event"]
    [handled] = [s for s in in_shipped if s.name == "HandleSignal:event"]
    assert handled.parent is not None and handled.parent.span_id == signal.context.span_id
    # Nothing of the shipment is left in the purchase's trace; the rest of both traces has no strays.
    assert not [s.name for s in spans if s.name == "HandleSignal:event" and _trace_of(s) == purchase_trace.trace_id]
    strays = {s.name for s in spans if _trace_of(s) not in (purchase_trace.trace_id, shipped_trace.trace_id)}
    assert strays <= {"QueryWorkflow:status", "HandleQuery:status"}, "only the test's own queries trace apart"

    # Keeping the shipment's trace context changed no command: the history replays, traced or not.
    history = await handle.fetch_history()
    for interceptors in ([EventflowTracingInterceptor()], []):
        await Replayer(workflows=[JourneyWorkflow], interceptors=interceptors).replay_workflow(history)


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
