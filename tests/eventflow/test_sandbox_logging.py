"""Logging from inside Temporal's workflow sandbox, on a real worker against the real dev server.

Before, a failing workflow task broke the worker's JSON logging: structlog imported a module lazily
on the sandboxed thread, the import ran under the sandbox's restrictions, and each record became a
``--- Logging error ---`` block (``RestrictedWorkflowAccessError``) while the SDK's "Failed
activation" warning was lost.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from core import logs
from core.settings import TemporalSettings
from core.temporal_client import CORE_LOGGER, connect
from devstack import Endpoints
from tests.eventflow.sandbox_workflow import LogsThenFailsItsTask
from tests.harness import eventually


@pytest.fixture
def stream(capsys: pytest.CaptureFixture[str]) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("json", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_failing_workflow_task_is_logged_as_json_with_no_logging_errors(
        stream: io.StringIO, endpoints: Endpoints, capsys: pytest.CaptureFixture[str]) -> None:
    unique = uuid.uuid4().hex[:10]
    # Through Eventflow's own connect: its runtime forwards the SDK core's log lines too.
    client: Client = await connect(TemporalSettings(address=endpoints.temporal_address, namespace="default",
                                                     task_queue=f"q-{unique}"))
    queue = f"sandbox-logging-{unique}"
    async with Worker(client, task_queue=queue, workflows=[LogsThenFailsItsTask]):
        handle = await client.start_workflow(LogsThenFailsItsTask.run, "jane.doe@example.com", id=f"wf-{unique}",
                                             task_queue=queue)

        def logged() -> bool:
            events = [str(line["event"]) for line in _lines(stream)]
            return (any(e.startswith("Failed activation on workflow LogsThenFailsItsTask") for e in events)
                    and any("Failing workflow task" in e for e in events))

        await eventually(logged, message="the SDK's and the core's warnings about the failed task")
        await handle.terminate("test done")

    lines = _lines(stream)
    text = stream.getvalue()
    captured = capsys.readouterr()
    assert "--- Logging error ---" not in captured.err + captured.out
    assert "RestrictedWorkflowAccessError" not in text + captured.err
    own = next(line for line in lines if str(line["event"]).startswith("about to fail for"))
    assert str(own["event"]).startswith("about to fail for j***@example.com") and own["odd"] == "<unserialisable>"
    assert own["temporal_workflow"]["workflow_id"] == f"wf-{unique}"  # type: ignore[index]  # a JSON log line: nested dicts are untyped
    failed = next(line for line in lines if str(line["event"]).startswith("Failed activation"))
    assert "RuntimeError: workflow task bug while handling j***@example.com" in str(failed["exception"])
    core = [line for line in lines if "Failing workflow task" in str(line["event"])]
    assert core and all(line["level"] == "warning" for line in core)
    assert "jane.doe@example.com" not in text
    assert logging.getLogger(CORE_LOGGER).name == CORE_LOGGER
