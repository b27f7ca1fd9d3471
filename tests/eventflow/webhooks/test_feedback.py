"""Provider webhooks to the ledger, the journeys and the suppression list, on the real servers.

Sends are counted at the provider stub. The test plays SendGrid and Twilio: it reads what the
send put in ``custom_args`` / the status-callback URL, and posts reports signed the providers' way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities.addresses import unkeyed_address_hash
from activities.outcomes import DELIVERY_SIGNAL, SendStatus
from consumer.dispatch import CUSTOMER_ID
from devstack import Endpoints
from eventflow.commands.journeys import _status_lines
from eventflow.webhooks.verify import SENDGRID_TIMESTAMP_HEADER
from events.model import Customer, CustomerEvent
from tests.activities.journey_support import event, journey, run_journey, send
from tests.activities.provider_stub import ProviderStub
from tests.eventflow.webhooks.conftest import FeedbackStack
from tests.eventflow.webhooks.signing import SendGridSigner, form, sendgrid_body, sendgrid_event, twilio_headers
from tests.harness import eventually
from workflows.address_book import AddressContacts, address_workflow_id
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences import LedgerEntry, PreferencesInput
from workflows.preferences_client import preferences_state, record_subscription_change

pytestmark = pytest.mark.timeout(60)

def _phone() -> str:
    """A number of this test's own: address workflows are per number across the namespace (and its runs)."""
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


async def _entry(stack: FeedbackStack, customer: str, key: str) -> LedgerEntry:
    return (await preferences_state(stack.client, customer)).ledger[key]


async def _state(stack: FeedbackStack, customer: str) -> PreferencesInput:
    return await preferences_state(stack.client, customer)


async def _sendgrid(stack: FeedbackStack, events: list[dict[str, object]],
                    signer: SendGridSigner | None = None) -> int:
    body = sendgrid_body(events)
    status, _ = await stack.post("/sendgrid/events", body, (signer or stack.signer).headers(body))
    return status


async def test_sendgrid_reports_move_the_ledger_forward_once_each_and_reach_the_journey(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str) -> None:
    stack, customer, workflow_id = feedback_stack, f"c-{unique}", f"journey:fb:{unique}"
    snapshot = journey([send("note", "email"), {"id": "pause", "delay": {"duration": "1h"}}])
    handle = await stack.client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(snapshot, event(customer)),
                                               id=workflow_id, task_queue=stack.queue, result_type=JourneyStatus)
    await eventually(lambda: len(provider.sends()) == 1, message="the email")
    args = provider.sends()[0].body["custom_args"]
    key = f"{workflow_id}/note"
    assert args == {"idempotency_key": key, "customer_id": customer, "workflow_id": workflow_id,
                    "step_id": "note", "channel": "email"}
    await eventually(lambda: _entry(stack, customer, key), message="the ledger entry")

    assert await _sendgrid(stack, [sendgrid_event("delivered", args, event_id=f"d-{unique}")]) == 200
    assert await _sendgrid(stack, [sendgrid_event("open", args, event_id=f"o-{unique}")]) == 200
    assert await _sendgrid(stack, [sendgrid_event("open", args, event_id=f"o-{unique}")]) == 200  # a retry
    late = sendgrid_event("delivered", args, event_id=f"late-{unique}")
    assert await _sendgrid(stack, [late]) == 200
    records = stack.records()

    # Refused before anything is handed on: someone else's key, no signature, a replayed request.
    assert await _sendgrid(stack, [sendgrid_event("click", args, event_id=f"x-{unique}")], SendGridSigner()) == 403
    body = sendgrid_body([sendgrid_event("click", args, event_id=f"y-{unique}")])
    assert (await stack.post("/sendgrid/events", body, {}))[0] == 403
    replay = stack.signer.headers(body, timestamp=int(datetime.now(UTC).timestamp()) - 3600)
    assert (await stack.post("/sendgrid/events", body, replay))[0] == 403
    assert (await stack.post("/sendgrid/events", b"[{", stack.signer.headers(b"[{")))[0] == 400

    entry = await eventually(lambda: _reports_at_least(stack, customer, key, 3), message="three reports applied")
    assert (entry.outcome, entry.reports) == ("opened", 3)  # the retried open once; the late delivered not back
    assert stack.records() == records == 4
    assert stack.sample("eventflow_webhook_requests_total", kind="sendgrid_events", result="forbidden") == 3
    assert stack.sample("eventflow_webhook_requests_total", kind="sendgrid_events", result="malformed") == 1
    assert stack.sample("eventflow_delivery_reports_total", channel="email", provider="sendgrid",
                        outcome="opened") == 2  # received twice, applied once
    history = [e async for e in handle.fetch_history_events()]
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history
               if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert signals.count(DELIVERY_SIGNAL) >= 3
    await handle.terminate("test over")


async def _reports_at_least(stack: FeedbackStack, customer: str, key: str, count: int) -> LedgerEntry | None:
    entry = await _entry(stack, customer, key)
    return entry if entry.reports >= count else None


async def test_a_hard_bounce_stops_a_later_journeys_email_until_the_customer_opts_in_again(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str, monkeypatch: pytest.MonkeyPatch,
        endpoints: Endpoints) -> None:
    stack, customer = feedback_stack, f"c-{unique}"
    # Started as the consumer starts journeys (with the CustomerId search attribute), so `journeys status` finds it.
    first = await stack.client.execute_workflow(
        JOURNEY_WORKFLOW, JourneyInput(journey([send("note", "email")]), event(customer)), id=f"journey:a:{unique}",
        task_queue=stack.queue, result_type=JourneyStatus,
        search_attributes=TypedSearchAttributes([SearchAttributePair(CUSTOMER_ID, customer)]))
    assert [s.status for s in first.sends] == [SendStatus.SENT]
    args = provider.sends()[0].body["custom_args"]
    hard = sendgrid_event("bounce", args, event_id=f"h-{unique}", type="bounce")
    assert await _sendgrid(stack, [hard]) == 200
    state = await eventually(lambda: _suppressed(stack, customer), message="the suppression")
    [suppression] = state.suppressions.values()
    assert (suppression.channel, suppression.reason, suppression.address_hash) == (
        "email", "hard_bounce", unkeyed_address_hash("email", "ada@example.com"))

    monkeypatch.setenv("TEMPORAL_ADDRESS", endpoints.temporal_address)
    lines = await eventually(lambda: _status_lines(customer), message="the journey in visibility")
    assert any(line.strip().startswith("sent note: email hello -> sent, bounced ") and line.endswith("(bounce)")
               for line in lines), lines

    second = await run_journey(stack.client, stack.queue, journey([send("note", "email"), send("text", "sms")]),
                               event(customer), f"journey:b:{unique}")
    assert [s.status for s in second.sends] == [SendStatus.SUPPRESSED, SendStatus.SENT]
    assert [r.path.startswith("/v3/") for r in provider.sends()] == [True, False]  # no second email
    # A send with a fallback channel takes it when its address is suppressed, as when it is opted out.
    falling = await run_journey(stack.client, stack.queue, journey([send("note", "email", fallback="sms")]),
                                event(customer), f"journey:f:{unique}")
    assert [(s.channel, s.status, s.fallback_from) for s in falling.sends] == [
        ("sms", SendStatus.SENT, "email:suppressed")]
    assert [r.path.startswith("/v3/") for r in provider.sends()] == [True, False, False]

    opt_in = CustomerEvent(uuid.uuid4().hex, "SubscriptionChanged",
                           (datetime.now(UTC) + timedelta(seconds=1)).isoformat(), Customer(customer),
                           {"channel": "email", "subscribed": True})
    await record_subscription_change(stack.client, opt_in, stack.queue)
    await eventually(lambda: _not_suppressed(stack, customer), message="the suppression lifted")
    third = await run_journey(stack.client, stack.queue, journey([send("note", "email")]), event(customer),
                              f"journey:c:{unique}")
    assert [s.status for s in third.sends] == [SendStatus.SENT]
    assert len(provider.sends()) == 4


async def _suppressed(stack: FeedbackStack, customer: str) -> PreferencesInput | None:
    state = await _state(stack, customer)
    return state if state.suppressions else None


async def _not_suppressed(stack: FeedbackStack, customer: str) -> bool:
    return not (await _state(stack, customer)).suppressions


async def test_stop_stops_sms_on_that_number_and_start_resumes_it(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str) -> None:
    stack, customer, workflow_id, phone = feedback_stack, f"c-{unique}", f"journey:sms:{unique}", _phone()
    await run_journey(stack.client, stack.queue, journey([send("text", "sms")]), event(customer, phone=phone),
                      workflow_id)
    callback = urlsplit(provider.sends()[0].body["StatusCallback"])
    assert callback.path == "/twilio/status"
    path = f"{callback.path}?{callback.query}"
    params = {"MessageSid": "SM" + unique, "MessageStatus": "delivered", "To": phone, "From": "+15550001111",
              "AccountSid": "AC1"}
    # Twilio's retry of the same callback, and one with a forged signature.
    for _ in range(2):
        status, text = await stack.post(path, form(params), twilio_headers(stack.url + path, params))
        assert status == 200, (status, text, path)
    forged = {**params, "MessageStatus": "failed"}
    assert (await stack.post(path, form(forged), twilio_headers(stack.url + path, params)))[0] == 403
    assert (await stack.post(path, form(params), twilio_headers(stack.url + path, params, "wrong-token")))[0] == 403
    entry = await eventually(lambda: _reports_at_least(stack, customer, f"{workflow_id}/text", 1),
                             message="the delivery report")
    assert (entry.outcome, entry.reports) == ("delivered", 1)
    owners = stack.client.get_workflow_handle(address_workflow_id("sms", unkeyed_address_hash("sms", phone)))
    await eventually(lambda: _owned_by(owners, customer), message="the number known as the customer's")

    async def inbound(body: str) -> None:
        message = {"From": phone, "To": "+15550001111", "Body": body, "MessageSid": "SM" + uuid.uuid4().hex}
        status, text = await stack.post("/twilio/inbound", form(message),
                                        twilio_headers(stack.url + "/twilio/inbound", message))
        assert (status, "<Response>" in text) == (200, True)

    await inbound("  Stop ")
    await eventually(lambda: _suppressed(stack, customer), message="the STOP")
    stopped = await run_journey(stack.client, stack.queue, journey([send("text", "sms"), send("note", "email")]),
                                event(customer, phone=phone), f"journey:sms2:{unique}")
    assert [s.status for s in stopped.sends] == [SendStatus.SUPPRESSED, SendStatus.SENT]
    await inbound("HELP")  # answered, changes nothing
    await inbound("start")
    await eventually(lambda: _not_suppressed(stack, customer), message="the START")
    resumed = await run_journey(stack.client, stack.queue, journey([send("text", "sms")]),
                                event(customer, phone=phone), f"journey:sms3:{unique}")
    assert [s.status for s in resumed.sends] == [SendStatus.SENT]
    assert [r.path.endswith("Messages.json") for r in provider.sends()] == [True, False, True]


async def _owned_by(handle: object, customer: str) -> bool:
    from temporalio.client import WorkflowHandle

    assert isinstance(handle, WorkflowHandle)
    try:
        return customer in await handle.query(AddressContacts.owners)
    except Exception:  # noqa: BLE001 - not started yet
        return False


async def test_other_paths_methods_and_oversized_bodies_are_refused_and_a_bad_record_does_not_stall_the_topic(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str) -> None:
    from confluent_kafka import Producer

    stack, customer, workflow_id = feedback_stack, f"c-{unique}", f"journey:misc:{unique}"
    assert (await stack.post("/metrics", b"", {}))[0] == 404
    async with stack.http.get(stack.url + "/sendgrid/events") as response:
        assert response.status == 405
    huge = b"[" + b" " * 1_100_000 + b"]"
    assert (await stack.post("/sendgrid/events", huge, stack.signer.headers(huge)))[0] == 413
    for timestamp in ("²", "9" * 5000):  # used to raise in the verifier: a 500 with a traceback
        headers = {**stack.signer.headers(b"[]"), SENDGRID_TIMESTAMP_HEADER: timestamp}
        assert (await stack.post("/sendgrid/events", b"[]", headers))[0] == 403
    assert stack.sample("eventflow_webhook_requests_total", kind="sendgrid_events", result="forbidden") == 2
    assert stack.records() == 0

    await run_journey(stack.client, stack.queue, journey([send("note", "email")]), event(customer), workflow_id)
    args = provider.sends()[0].body["custom_args"]
    producer = Producer(stack.kafka_config)
    producer.produce(stack.topic, key=b"x", value=b"not a feedback record")
    producer.flush(10)
    assert await _sendgrid(stack, [sendgrid_event("delivered", args, event_id=f"d-{unique}")]) == 200
    entry = await eventually(lambda: _reports_at_least(stack, customer, f"{workflow_id}/note", 1),
                             message="the report after the bad record")
    assert entry.outcome == "delivered"
    assert stack.sample("eventflow_feedback_records_total", kind="unknown", result="undecodable") == 1


async def test_connections_beyond_the_cap_are_answered_503_at_once(kafka_config: dict[str, str], unique: str) -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from eventflow.webhooks import KafkaHandoff, WebhookMetrics, WebhookServer

    handoff = KafkaHandoff(kafka_config, f"unused-{unique}")
    server = WebhookServer(handoff, WebhookMetrics(CollectorRegistry()), sendgrid=None, twilio=None, host="127.0.0.1",
                           port=0, max_connections=1)
    await server.start()
    try:
        _, held = await asyncio.open_connection("127.0.0.1", server.port)  # a client that sends nothing
        await eventually(lambda: server.open_connections == 1, message="the first connection accepted")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        writer.close()
        held.close()
    finally:
        await server.stop()
        handoff.close()


async def test_one_source_cannot_hold_every_slot_and_idle_keep_alive_connections_are_closed(
        kafka_config: dict[str, str], unique: str) -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from eventflow.webhooks import KafkaHandoff, WebhookMetrics, WebhookServer

    handoff = KafkaHandoff(kafka_config, f"unused-{unique}")
    server = WebhookServer(handoff, WebhookMetrics(CollectorRegistry()), sendgrid=None, twilio=None, host="127.0.0.1",
                           port=0, max_connections=10, max_connections_per_source=2, request_deadline_seconds=60,
                           idle_seconds=0.2)
    await server.start()
    try:
        # Two connections that send nothing hold this source's share; the cap (10) is far off.
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await eventually(lambda: server.open_connections == 2, message="both connections accepted")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 503") and server.refused_per_source == 1
        writer.close()
        # The idle ones are closed by the server (the short idle time is also their header deadline).
        for idle_reader, idle_writer in held:
            assert await asyncio.wait_for(idle_reader.read(), 5) == b"", "an idle connection was closed"
            idle_writer.close()
        # A kept-alive connection after a request gives its slot back once idle, too.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 ")
        rest = await asyncio.wait_for(reader.read(), 5)  # returns once the server closes the idle connection
        assert b"HTTP/1.1" not in rest
        writer.close()
        await eventually(lambda: server.open_connections == 0, message="every slot free again")
    finally:
        await server.stop()
        handoff.close()


async def test_a_bounce_posted_to_the_webhook_makes_the_journey_fall_back_to_sms(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str) -> None:
    """The seam with the journey end to end: SendGrid's signed bounce reaches the sending instance
    (``DELIVERY_SIGNAL``), whose late fallback sends the SMS, once."""
    stack, customer, workflow_id = feedback_stack, f"c-{unique}", f"journey:late:{unique}"
    step = {"id": "welcome", "send": {"channel": "email", "template": "hello", "fallback": "sms",
                                      "fallback_within": "1h"}}
    handle = await stack.client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(journey([step]), event(customer)),
                                               id=workflow_id, task_queue=stack.queue, result_type=JourneyStatus)
    await eventually(lambda: len(provider.sends()) == 1, message="the email")
    args = provider.sends()[0].body["custom_args"]
    bounce = sendgrid_event("bounce", args, event_id=f"b-{unique}", type="bounce")
    for _ in range(2):  # SendGrid's retry changes nothing
        assert await _sendgrid(stack, [bounce]) == 200
    status = await handle.result()
    assert [(s.channel, s.status, s.fallback_from) for s in status.sends] == [
        ("email", SendStatus.SENT, None), ("sms", SendStatus.SENT, "email:bounced")]
    assert [r.path.endswith("Messages.json") for r in provider.sends()] == [False, True]
