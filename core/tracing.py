"""OpenTelemetry tracing: settings, the process's tracer provider, and helpers for every hop.

Off by default: without ``EVENTFLOW_OTLP_ENDPOINT`` no tracer provider, exporter thread or
Temporal interceptor exists, `span` is a null context and the SDK is never imported. On, spans go
to one OTLP/HTTP exporter through a batch processor, sampled by parent (a sampled upstream trace is
kept) and otherwise by ``EVENTFLOW_TRACE_SAMPLE_RATIO``. A record's ``traceparent`` comes from
whoever produced it; with ``EVENTFLOW_TRACE_UPSTREAM_SAMPLING=ratio`` its "sampled" flag no longer
forces a trace, the ratio decides (by trace id, so every hop of one trace decides alike).

The active provider is held here rather than as OpenTelemetry's global, which can be set only once
per process: tests install one provider per test (`installed`) and the Temporal interceptor is given
its tracer explicitly. Span attributes are ids and bounded names only (event id and type, journey,
step, channel, provider, outcome, workflow id), never an address, a name or message content.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from core.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from temporalio.client import Interceptor

TRACER_NAME = "eventflow"

# Attribute names (OpenTelemetry's messaging conventions where one exists, ``eventflow.*`` otherwise).
EVENT_ID = "eventflow.event_id"
EVENT_TYPE = "eventflow.event_type"
JOURNEY = "eventflow.journey"
STEP = "eventflow.step"
CHANNEL = "eventflow.channel"
PROVIDER = "eventflow.provider"
OUTCOME = "eventflow.outcome"
WORKFLOW_ID = "eventflow.workflow_id"


def load_tracing_settings(environ: Mapping[str, str] | None = None) -> TracingSettings:
    """Reads the tracing settings (raising `ConfigError` naming the variable)."""
    return TracingSettings.load(environ)


_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_propagator = TraceContextTextMapPropagator()


def install(provider: TracerProvider | None) -> None:
    """Makes ``provider`` the one every Eventflow span comes from (None: tracing off)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


@contextmanager
def installed(provider: TracerProvider) -> Iterator[TracerProvider]:
    """Installs ``provider`` for the ``with`` block, then restores the previous one (tests)."""
    previous = _provider
    install(provider)
    try:
        yield provider
    finally:
        install(previous)


def tracer() -> Tracer | None:
    """The active tracer, or None while tracing is off."""
    return _tracer


def sampler(settings: TracingSettings) -> Sampler:
    """The sampler of ``settings``: by parent, a remote "sampled" parent capped by the ratio when asked."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

    ratio = TraceIdRatioBased(settings.sample_ratio)
    if settings.upstream_sampling == "ratio":
        # A remote parent marked unsampled is still not traced: only the forcing direction is capped.
        return ParentBased(ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ALWAYS_OFF)
    return ParentBased(ratio)


def build_provider(settings: TracingSettings, service_name: str) -> TracerProvider:
    """An SDK provider exporting by OTLP/HTTP through a batch processor (one exporter thread)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=sampler(settings))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=settings.otlp_endpoint, headers=dict(settings.otlp_headers))))
    return provider


@contextmanager
def started(settings: TracingSettings, service_name: str) -> Iterator[TracerProvider | None]:
    """Tracing for one process run: installed on entry when enabled, flushed and shut down on exit."""
    if not settings.enabled:
        yield None
        return
    provider = build_provider(settings, service_name)
    install(provider)
    try:
        yield provider
    finally:
        install(None)
        provider.shutdown()


def temporal_interceptors() -> list[Interceptor]:
    """Temporal's tracing interceptor on the active tracer; none while tracing is off.

    On a client it covers the client's starts and signals and every worker built on that client
    (workflow and activity spans), carrying the context in Temporal headers. Eventflow's subclass
    (`core._temporal_tracing`) keeps a signal, and the activities a workflow starts because of it,
    in the sender's trace.
    """
    if _provider is None:
        return []
    from core._temporal_tracing import EventflowTracingInterceptor

    return [EventflowTracingInterceptor(_provider.get_tracer("temporalio"))]


def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, context: Context | None = None,
         attributes: Mapping[str, AttributeValue] | None = None) -> AbstractContextManager[Span | None]:
    """A current span on the active tracer, or a null context (yielding None) while tracing is off.

    A failure is recorded as the exception's type only: messages can quote an address.
    """
    active = _tracer
    if active is None:
        return nullcontext()
    return _recording_span(active, name, kind, context, attributes)


@contextmanager
def _recording_span(active: Tracer, name: str, kind: SpanKind, context: Context | None,
                    attributes: Mapping[str, AttributeValue] | None) -> Iterator[Span]:
    with active.start_as_current_span(name, context=context, kind=kind, attributes=attributes,
                                      record_exception=False, set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Adds ``attributes`` to the current span (nothing while tracing is off or no span is current)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(attributes)


def extract(headers: Sequence[tuple[str, str | bytes | None]]) -> Context | None:
    """The W3C trace context in Kafka record headers; None when tracing is off or none is present."""
    if _tracer is None:
        return None
    carrier = {name.lower(): value.decode("latin-1") if isinstance(value, bytes) else value
               for name, value in headers if name.lower() in ("traceparent", "tracestate") and value is not None}
    return _propagator.extract(carrier) if carrier else None


def inject() -> list[tuple[str, str | bytes | None]]:
    """The current span's W3C trace context as Kafka record headers (empty when no span is active)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()]


def current_ids() -> tuple[str, str] | None:
    """The active span's trace id and span id as lowercase hex, or None when no valid span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def exemplar() -> dict[str, str] | None:
    """A Prometheus exemplar linking an observation to the active trace (None when tracing is off)."""
    ids = current_ids() if _tracer is not None else None
    return {"trace_id": ids[0]} if ids else None


def exemplar_from(headers: Sequence[tuple[str, str | bytes | None]]) -> dict[str, str] | None:
    """An exemplar for the trace a record's ``traceparent`` continues (None when tracing is off or it has none)."""
    context = extract(headers)
    if context is None:
        return None
    span_context = trace.get_current_span(context).get_span_context()
    return {"trace_id": format(span_context.trace_id, "032x")} if span_context.is_valid else None
