"""Temporal's tracing interceptor, with every message and what it causes in its sender's trace.

Temporal's `TracingInterceptor` records a signal's or update's handler in the trace of the client
that started the workflow, linked to the sender's, and every activity in that trace too. A journey
runs for days and each event that reaches it has a trace of its own, so here:

* a signal or update that carries a trace context is handled in it: ``HandleSignal:<name>``
  (``ValidateUpdate``/``HandleUpdate:<name>``) is a child of the sender's span, linked to the run's
  trace, and the handler can read the context (`core.workflow_traces.message_trace`);
* an activity started while the workflow names a cause (`core.workflow_traces.cause_next_activities`)
  gets its ``StartActivity:<type>`` span in the cause's trace, linked to the run's; the activity's
  own spans follow it through the activity's header as before.

Messages without a trace context and activities without a cause are traced as Temporal does.

Temporal's documentation asks for a subclass to customise its interceptor; this one reuses its
protected helpers for the workflow side (`_completed_span` records a zero-length span outside the
sandbox and never on replay). tests/core/test_tracing.py pins the resulting trace shape, so an SDK
upgrade that changes them fails there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind
from temporalio.api.common.v1 import Payload
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.contrib.opentelemetry._context import attached_context
from temporalio.contrib.opentelemetry._interceptor import _TracingWorkflowOutboundInterceptor
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle

from core.workflow_traces import MESSAGE_TRACE_KEY, activity_cause, trace_fields


class EventflowTracingInterceptor(TracingInterceptor):
    """Temporal's client, activity and workflow tracing, with messages traced in their sender's trace."""

    def workflow_interceptor_class(
            self, registration: WorkflowInterceptorClassInput) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(registration)  # registers the span recorder the workflow side calls
        return _WorkflowInbound


class _WorkflowInbound(TracingWorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        # Skips the parent's init, which would wrap ``outbound`` in Temporal's own outbound class.
        WorkflowInboundInterceptor.init(self, _WorkflowOutbound(outbound, self))

    async def handle_signal(self, message: HandleSignalInput) -> None:
        sender = self._sender_trace(message.headers)
        if not sender:
            return await super().handle_signal(message)
        with self._handled_in(sender, f"HandleSignal:{message.signal}"):
            await self.next.handle_signal(message)

    def handle_update_validator(self, message: HandleUpdateInput) -> None:
        sender = self._sender_trace(message.headers)
        if not sender:
            return super().handle_update_validator(message)
        with self._handled_in(sender, f"ValidateUpdate:{message.update}"):
            self.next.handle_update_validator(message)

    async def handle_update_handler(self, message: HandleUpdateInput) -> Any:
        sender = self._sender_trace(message.headers)
        if not sender:
            return await super().handle_update_handler(message)
        with self._handled_in(sender, f"HandleUpdate:{message.update}"):
            return await self.next.handle_update_handler(message)

    def _sender_trace(self, headers: Mapping[str, Payload]) -> dict[str, str]:
        header = headers.get(self.header_key)
        if not header:
            return {}
        carrier = self.payload_converter.from_payloads([header])[0]
        return trace_fields(carrier) if isinstance(carrier, Mapping) else {}

    @contextmanager
    def _handled_in(self, sender: dict[str, str], span_name: str) -> Iterator[None]:
        """Runs the handler in the sender's trace: its span a child of the sender's, linked to the run's."""
        context = otel_context.set_value(MESSAGE_TRACE_KEY, sender, self.text_map_propagator.extract(sender))
        # The interceptor on the context is how Temporal's workflow span helpers find it.
        with attached_context(self._set_on_context(context)):
            self._completed_span(span_name, link_context_carrier=self._run_trace(sender), kind=SpanKind.SERVER)
            yield

    def _run_trace(self, other: Mapping[str, str]) -> dict[str, Any] | None:
        """The run's own trace context to link to; None when the run has none or it is ``other``."""
        run = self._load_workflow_context_carrier()
        return None if not run or trace_fields(run) == dict(other) else run


class _WorkflowOutbound(_TracingWorkflowOutboundInterceptor):
    root: _WorkflowInbound

    def start_activity(self, start: StartActivityInput) -> ActivityHandle[Any]:
        cause = activity_cause()
        if cause is None:
            return super().start_activity(start)
        self._caused_span(f"StartActivity:{start.activity}", cause, start)
        return self.next.start_activity(start)

    def start_local_activity(self, start: StartLocalActivityInput) -> ActivityHandle[Any]:
        cause = activity_cause()
        if cause is None:
            return super().start_local_activity(start)
        self._caused_span(f"StartActivity:{start.activity}", cause, start)
        return self.next.start_local_activity(start)

    def _caused_span(self, span_name: str, cause: Mapping[str, str],
                     start: StartActivityInput | StartLocalActivityInput) -> None:
        """The activity's start span in the cause's trace, linked to the run's; its context goes in the header."""
        root = self.root
        context = root._set_on_context(root.text_map_propagator.extract(dict(cause)))
        # Attached and detached within this call: nothing awaits in between.
        token = otel_context.attach(context)
        try:
            root._completed_span(span_name, add_to_outbound=start, link_context_carrier=root._run_trace(cause),
                                 kind=SpanKind.CLIENT)
        finally:
            otel_context.detach(token)
