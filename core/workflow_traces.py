"""Trace context inside workflows: the trace a message arrived in, and the trace the next activities join.

Eventflow's Temporal tracing interceptor (`core._temporal_tracing`) runs every signal and update
handler in the trace of the client that sent the message, and puts the message's W3C context where
the handler can read it (`message_trace`). A workflow that acts later because of a message -- the
journey interpreter sending once a ``wait_for`` took an event -- keeps that context and names it as
the cause of what it schedules next (`cause_next_activities`); the interceptor then starts those
activities in the message's trace, linked to the run's own trace.

Only the OpenTelemetry API is used here, so this module is safe in workflow code (import it through
``workflow.unsafe.imports_passed_through()``, so that workflow and interceptor share one context) and
with tracing off: without the interceptor `message_trace` is empty and a cause changes nothing. What a
workflow keeps comes from the message's Temporal header, which is part of its history, so a replay
keeps the same; it only ever reaches the headers of activity commands, which Temporal does not
compare on replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

from opentelemetry import context as otel_context

#: The W3C fields a kept trace context holds; baggage is left behind (it can carry anything).
TRACE_FIELDS = ("traceparent", "tracestate")

#: On the OpenTelemetry context while a handler runs: the W3C context its message was sent in.
MESSAGE_TRACE_KEY = otel_context.create_key("eventflow-message-trace")

# Per asyncio task, so a cause set by a workflow's run coroutine stays with that coroutine (and the
# tasks it creates afterwards) and never reaches another workflow or a signal handler.
_cause: ContextVar[Mapping[str, str] | None] = ContextVar("eventflow_activity_cause", default=None)


def trace_fields(carrier: Mapping[str, object]) -> dict[str, str]:
    """The W3C trace context fields of ``carrier`` (a propagator's carrier), as strings."""
    return {name: str(carrier[name]) for name in TRACE_FIELDS if carrier.get(name)}


def message_trace() -> dict[str, str]:
    """In a signal or update handler: the W3C context the message was sent in; empty when it carried none."""
    value = otel_context.get_value(MESSAGE_TRACE_KEY)
    return dict(value) if isinstance(value, Mapping) else {}


def cause_next_activities(trace: Mapping[str, str]) -> None:
    """In workflow code: activities the calling task starts from now on continue ``trace``.

    Pass a context `message_trace` returned; an empty one ends the cause, and activities join the
    run's own trace again.
    """
    _cause.set(dict(trace) if trace else None)


def activity_cause() -> Mapping[str, str] | None:
    """The trace context activities started now continue (the interceptor's side), None for the run's own."""
    return _cause.get()
