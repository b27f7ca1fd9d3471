"""``eventflow journeys validate | simulate | status`` end to end."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from consumer.dispatch import Dispatcher
from eventflow.cli import main
from eventflow.commands.journeys import _status_lines
from events import samples
from events.model import Customer, CustomerEvent
from journeys import Router, StartJourney, load_all
from journeys.loader import validate_folder
from tests.harness import eventually
from tests.workflows.journey_harness import Capture, compile_journey, worker


def _write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def _at(event: dict[str, Any], when: datetime) -> dict[str, Any]:
    return {**event, "occurred_at": when.isoformat().replace("+00:00", "Z")}


def test_validate_passes_on_the_shipped_journeys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "validate"]) == 0
    out = capsys.readouterr().out
    assert "ok post_purchase v1" in out and "ok abandoned_cart v1" in out and "ok welcome_series v1" in out


def test_validate_fails_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "bad.yaml").write_text(
        "id: bad\nversion: 1\ntrigger:\n  event: PurchaseCompleted\nentry: {rule: once}\nsteps:\n"
        "  - id: s\n    send: {channel: email, template: missing}\n")

    assert main(["journeys", "validate", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'definitions' / 'bad.yaml'}:8: " in err and "unknown template 'missing'" in err


def test_validate_reports_a_recursive_alias_without_a_traceback(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "loop.yaml").write_text("id: loop\nversion: 1\nsteps: &s\n  - *s\n")

    assert main(["journeys", "validate", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'definitions' / 'loop.yaml'}:4: YAML aliases (*s) are not supported" in err
    assert "Traceback" not in err


def _offset(line: str) -> timedelta:
    found = re.match(r"\+(\d+)d (\d\d):(\d\d):(\d\d)", line)
    assert found, line
    days, hours, minutes, seconds = (int(n) for n in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def test_simulate_two_weeks_in_seconds_with_masked_addresses(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    customer = samples.customer(email="dana@example.com", locale="de", first_name="Dana")
    start = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    purchase = _at(samples.purchase(customer, order_id="ord-sim"), start)
    unrelated = _at(samples.event("ProfileUpdated", customer, {"changed_fields": ["locale"]}),
                    start + timedelta(days=1))
    events = _write_events(tmp_path / "events.jsonl", [purchase, unrelated])

    assert main(["journeys", "simulate", "post_purchase", "--events", str(events)]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    (thanks,) = [line for line in lines if "thank_you" in line and "send email" in line]
    (review,) = [line for line in lines if "review_request" in line and "send email" in line]
    assert "d***@example.com" in thanks and "Danke" in thanks, out
    # The simulated clock also moves while an activity runs on a loaded machine: compare whole
    # days (the journey's own delay), not seconds.
    assert _offset(thanks) < timedelta(hours=1) and timedelta(days=3) <= _offset(review) < timedelta(days=3, hours=1)
    assert "dana@example.com" not in out
    assert "finished; 2 send(s)" in out


def test_simulate_exit_event_stops_the_journey(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    customer = samples.customer()
    start = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    purchase = _at(samples.purchase(customer, order_id="ord-r"), start)
    refund = _at(samples.event("OrderRefunded", customer, {"order_id": "ord-r", "reason": "late",
                                                           "amount": {"amount": "49.90", "currency": "EUR"}}),
                 start + timedelta(days=1))
    events = _write_events(tmp_path / "events.jsonl", [purchase, refund])

    assert main(["journeys", "simulate", "post_purchase", "--events", str(events)]) == 0

    out, err = capfd.readouterr()  # file descriptors: the SDK core writes there directly
    assert "+1d 00:00:00" in out and "exit: exit event OrderRefunded; 1 send(s)" in out
    assert "temporalio_sdk_core" not in out + err, "the SDK core's chatter is not the command's output"
    assert "review_request" not in out.split("wait_for_delivery")[-1]


def test_simulate_rejects_an_invalid_events_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_type": "PurchaseCompleted"}\n')

    assert main(["journeys", "simulate", "post_purchase", "--events", str(events)]) == 2
    assert f"{events}:1: not a valid event" in capsys.readouterr().err


async def test_status_lists_a_customers_journeys_through_search_attributes(
        temporal_client: Client, unique: str, monkeypatch: pytest.MonkeyPatch, endpoints: Any) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    customer_id = f"cust-status-{unique}"
    event = CustomerEvent(event_id=str(uuid.uuid4()), event_type="PurchaseCompleted",
                          occurred_at="2026-05-04T08:00:00+00:00",
                          customer=Customer(id=customer_id, email="eve@example.com", locale="en"),
                          payload={"order_id": f"ord-{unique}", "cart_id": None, "items": [],
                                   "total": {"amount": "10.00", "currency": "EUR"}})
    (action,) = [a for a in Router(load_all()).route(event) if isinstance(a, StartJourney)]
    task_queue = f"test-status-{unique}"
    capture = Capture()
    async with worker(temporal_client, task_queue, capture):
        await Dispatcher(temporal_client, task_queue).apply(event, action)
        try:
            await eventually(lambda: capture.sent, message="the thank-you send")

            async def listed() -> list[str]:
                lines = await _status_lines(customer_id)
                return lines if any("wait_for_delivery" in line for line in lines) else []

            lines = await eventually(listed, timeout_seconds=30, message="the journey in visibility")
        finally:
            await temporal_client.get_workflow_handle(action.workflow_id).terminate("test done")

    assert lines[0].startswith(f"{action.workflow_id}  post_purchase v1  running  at wait_for_delivery (delay until ")
    assert lines[1].strip() == "sent thank_you: email purchase_thank_you -> sent"
    assert len(lines) == 2
    description = await temporal_client.get_workflow_handle(action.workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.TERMINATED
    assert await _status_lines(f"cust-nobody-{unique}") == []


async def test_status_shows_finished_journeys_from_their_result(
        temporal_client: Client, unique: str, monkeypatch: pytest.MonkeyPatch, endpoints: Any,
        tmp_path: Path) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    compile_journey(tmp_path, "id: quick\nversion: 4\ntrigger: {event: UserSignedUp}\nentry: {rule: once}\n"
                              "steps:\n  - {id: hi, send: {channel: sms, template: note}}\n"
                              "  - {id: stop, exit: {reason: all done}}\n")
    (definition,) = validate_folder(tmp_path).definitions
    customer_id = f"cust-done-{unique}"
    event = CustomerEvent(event_id=str(uuid.uuid4()), event_type="UserSignedUp", occurred_at="2026-05-04T08:00:00+00:00",
                          customer=Customer(id=customer_id, phone="+15555550100"),
                          payload={"signup_source": "web", "marketing_opt_in": False})
    (action,) = Router([definition]).route(event)
    assert isinstance(action, StartJourney)
    task_queue = f"test-status-{unique}"
    async with worker(temporal_client, task_queue, Capture()):
        await Dispatcher(temporal_client, task_queue).apply(event, action)
        await temporal_client.get_workflow_handle(action.workflow_id).result()

    async def listed() -> list[str]:
        lines = await _status_lines(customer_id)
        return lines if any("completed" in line for line in lines) else []

    lines = await eventually(listed, timeout_seconds=30, message="the finished journey in visibility")
    assert lines == [f"{action.workflow_id}  quick v4  completed  exited: all done",
                     "    sent hi: sms note -> sent"]


NO_WORKER = "no worker answered within 5s: is `eventflow worker` running?"


async def test_status_and_report_say_no_worker_answered_instead_of_waiting(
        temporal_client: Client, unique: str, monkeypatch: pytest.MonkeyPatch, endpoints: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    journey_id = f"unattended_{unique}"
    compile_journey(tmp_path, f"id: {journey_id}\nversion: 1\ntrigger: {{event: UserSignedUp}}\nentry: {{rule: once}}\n"
                              "steps:\n  - {id: hi, send: {channel: sms, template: note}}\n")
    (definition,) = validate_folder(tmp_path).definitions
    customer_id = f"cust-unattended-{unique}"
    event = CustomerEvent(event_id=str(uuid.uuid4()), event_type="UserSignedUp", occurred_at="2026-05-04T08:00:00+00:00",
                          customer=Customer(id=customer_id, phone="+15555550100"),
                          payload={"signup_source": "web", "marketing_opt_in": False})
    (action,) = Router([definition]).route(event)
    assert isinstance(action, StartJourney)
    task_queue = f"test-no-worker-{unique}"  # nothing polls it
    await Dispatcher(temporal_client, task_queue).apply(event, action)
    try:
        async def listed() -> bool:
            return any([e async for e in temporal_client.list_workflows(f"CustomerId = '{customer_id}'")])

        await eventually(listed, message="the journey in visibility")

        assert await asyncio.to_thread(main, ["journeys", "status", "--customer", customer_id]) == 1
        out, err = capsys.readouterr()
        assert out.splitlines() == [f"{action.workflow_id}  running  (status unavailable: {NO_WORKER})"]
        assert err.splitlines() == [f"eventflow: 1 journey(s) shown without status: {NO_WORKER}"]

        assert await asyncio.to_thread(main, ["journeys", "report", journey_id]) == 1
        out, err = capsys.readouterr()
        assert out == ""  # no funnel of zeros
        assert err.splitlines() == [f"eventflow: none of the 1 instance(s) of {journey_id} could be read: {NO_WORKER}"]
    finally:
        async for execution in temporal_client.list_workflows(f"TaskQueue = '{task_queue}'"):
            if execution.status == WorkflowExecutionStatus.RUNNING:
                await temporal_client.get_workflow_handle(execution.id).terminate("test done")


async def test_report_on_an_unknown_journey_fails_like_history(
        monkeypatch: pytest.MonkeyPatch, endpoints: Any, unique: str, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    assert await asyncio.to_thread(main, ["journeys", "report", f"nosuch_{unique}"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"eventflow: journey 'nosuch_{unique}' has no instances and is not defined in ")
    assert "post_purchase" in line  # the journeys it could have meant


async def test_report_on_a_defined_journey_without_instances_says_so(
        monkeypatch: pytest.MonkeyPatch, endpoints: Any, unique: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    monkeypatch.setenv("EVENTFLOW_JOURNEYS_DIR", str(tmp_path))
    journey_id = f"fresh_{unique}"
    compile_journey(tmp_path, f"id: {journey_id}\nversion: 1\ntrigger: {{event: UserSignedUp}}\nentry: {{rule: once}}\n"
                              "steps:\n  - {id: hi, send: {channel: sms, template: note}}\n")
    assert await asyncio.to_thread(main, ["journeys", "report", journey_id]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"journey {journey_id} has no instances yet: one starts when its trigger event (UserSignedUp) reaches "
        "the consumer"]
