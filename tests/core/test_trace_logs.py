"""Log lines carry the active span's trace and span ids, and nothing when no span is active."""

from __future__ import annotations

import logging
from collections.abc import Callable

import structlog
from opentelemetry.sdk.trace import TracerProvider


def test_structlog_and_stdlib_lines_carry_the_active_span(captured: Callable[[], list[dict[str, object]]]) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        structlog.get_logger("t").info("inside_span")
        logging.getLogger("t.stdlib").warning("stdlib_inside_span")
        ids = span.get_span_context()
    structlog.get_logger("t").info("after_span")

    inside, stdlib_inside, after = captured()
    for line in (inside, stdlib_inside):
        assert line["trace_id"] == format(ids.trace_id, "032x")
        assert line["span_id"] == format(ids.span_id, "016x")
    assert "trace_id" not in after and "span_id" not in after


def test_a_nested_span_logs_its_own_span_id(captured: Callable[[], list[dict[str, object]]]) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner") as inner:
        structlog.get_logger("t").info("nested")
    (line,) = captured()
    assert line["trace_id"] == format(outer.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(inner.get_span_context().span_id, "016x")
