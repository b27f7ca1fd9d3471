"""WhatsApp's 24-hour window on the real servers: a customer's message through ``eventflow webhooks`` (Kafka, the
feedback consumer) into the store, then what the send activity hands the Twilio stub: free-form text inside the
window, the template outside it, and nothing at all (``OutsideWhatsAppWindow``) outside it without a template.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.addresses import unkeyed_address_hash as address_hash
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput
from activities.outcomes import SendStatus
from activities.send import NotificationActivities
from activities.whatsapp import InboundMessage
from consumer.feedback import FeedbackApplier, FeedbackConsumer
from consumer.topics import ensure_topics
from eventflow.webhooks import KafkaHandoff, TwilioVerifier, WebhookMetrics, WebhookServer
from events.model import Customer
from store.customers import CustomerStore, ProfileWrite
from store.feedback import StoreFeedback
from store.ledger import PostgresLedger
from tests.activities.journey_support import channels_for
from tests.activities.provider_stub import ProviderStub, provider
from tests.eventflow.webhooks.conftest import free_port
from tests.eventflow.webhooks.signing import TWILIO_TOKEN, form, twilio_headers
from tests.harness import eventually
from workflows.profile import ProfileUpdate

__all__ = ["provider"]

pytestmark = pytest.mark.timeout(60)

TEXT = "Your order {{ payload.order_id }} ships today."


def _number() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def _notification(customer: str, *, content_sid: str = "HXship") -> SendNotificationInput:
    return SendNotificationInput(
        idempotency_key=f"journey:wa:{uuid.uuid4().hex[:10]}/ship", channel="whatsapp", customer=Customer(id=customer),
        template_id="ship", locale="en", body_template=TEXT, context={"payload": {"order_id": "o-7"}},
        provider_template_id=content_sid,
        template_variable_templates={"1": "{{ payload.order_id }}"} if content_sid else {})


async def _customer(store: CustomerStore, *, whatsapp: str | None = None, phone: str | None = None) -> str:
    customer = f"c-{uuid.uuid4().hex[:8]}"
    await store.apply_profile_updates([ProfileWrite(customer, ProfileUpdate(
        f"e-{customer}", "2026-11-01T00:00:00Z", whatsapp=whatsapp, phone=phone))])
    return customer


async def _wrote(pool: asyncpg.Pool, number: str, ago: timedelta) -> None:
    """The customer's message as the feedback consumer records it, received ``ago``."""
    await StoreFeedback(pool).inbound(InboundMessage(address_hash("whatsapp", number), address_hash("sms", number),
                                                     (datetime.now(UTC) - ago).isoformat()))


@pytest.fixture
async def sends(store_pool: asyncpg.Pool, provider: ProviderStub) -> AsyncIterator[NotificationActivities]:
    store = CustomerStore(store_pool)
    yield NotificationActivities({"whatsapp": channels_for(provider.base_url)["whatsapp"]},
                                 ledger=PostgresLedger(store_pool), contacts=store, inbound=store,
                                 metrics=SendMetrics(CollectorRegistry()))


async def test_a_message_through_the_webhooks_opens_the_window_and_the_free_form_text_goes_out(
        store_pool: asyncpg.Pool, kafka_config: dict[str, str], temporal_client: Client, provider: ProviderStub,
        sends: NotificationActivities, unique: str) -> None:
    store = CustomerStore(store_pool)
    own_number, phone = _number(), _number()
    # One customer with a WhatsApp number, one whose WhatsApp is their phone.
    customers = [await _customer(store, whatsapp=own_number), await _customer(store, phone=phone)]
    topic = f"feedback-{unique}"
    await asyncio.to_thread(ensure_topics, kafka_config, [topic], partitions=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    handoff = KafkaHandoff(kafka_config, topic)
    registry = CollectorRegistry()
    server = WebhookServer(handoff, WebhookMetrics(registry), sendgrid=None,
                           twilio=TwilioVerifier(TWILIO_TOKEN, url), host="127.0.0.1", port=port)
    consumer = FeedbackConsumer(kafka_config, topic, f"feedback-{unique}",
                                FeedbackApplier(temporal_client, f"q-{unique}", store=StoreFeedback(store_pool)))
    stop = asyncio.Event()
    await server.start()
    consuming = asyncio.create_task(consumer.run(stop))
    try:
        async with aiohttp.ClientSession() as http:
            for number in (own_number, phone):
                message = {"From": f"whatsapp:{number}", "To": "whatsapp:+15550002222", "Body": "is it shipped?",
                           "MessageSid": f"SM{uuid.uuid4().hex}"}
                async with http.post(f"{url}/twilio/inbound", data=form(message),
                                     headers=twilio_headers(f"{url}/twilio/inbound", message)) as response:
                    assert response.status == 200
            # An SMS (not WhatsApp) from the same number opens no window and is no inbound WhatsApp message.
            sms = {"From": phone, "To": "+15550001111", "Body": "hello", "MessageSid": f"SM{uuid.uuid4().hex}"}
            async with http.post(f"{url}/twilio/inbound", data=form(sms),
                                 headers=twilio_headers(f"{url}/twilio/inbound", sms)) as response:
                assert response.status == 200
        # Counted once each as the service hands them on, and no number in any label.
        assert registry.get_sample_value("eventflow_whatsapp_inbound_messages_total") == 2
        exposition = generate_latest(registry).decode()
        assert not any(number.lstrip("+") in exposition for number in (own_number, phone))
        for customer, number in zip(customers, (own_number, phone), strict=True):
            hashed = address_hash("whatsapp", number)
            await eventually(lambda: store.last_whatsapp_inbound(customer, hashed),  # noqa: B023 - awaited at once
                             message="the message recorded")
    finally:
        stop.set()
        await server.stop()
        await asyncio.wait_for(consuming, 15)
        handoff.close()

    results = [await ActivityEnvironment().run(sends.send_notification, _notification(c)) for c in customers]

    assert [r.status for r in results] == [SendStatus.SENT, SendStatus.SENT]
    assert [(r.body["To"], r.body.get("Body"), r.body.get("ContentSid")) for r in provider.sends()] == [
        (f"whatsapp:{own_number}", "Your order o-7 ships today.", None),
        (f"whatsapp:{phone}", "Your order o-7 ships today.", None)]


async def test_outside_the_window_the_template_goes_out(store_pool: asyncpg.Pool, provider: ProviderStub,
                                                        sends: NotificationActivities) -> None:
    store = CustomerStore(store_pool)
    wrote_long_ago, never_wrote = _number(), _number()
    customers = [await _customer(store, whatsapp=wrote_long_ago), await _customer(store, whatsapp=never_wrote)]
    await _wrote(store_pool, wrote_long_ago, timedelta(hours=25))

    results = [await ActivityEnvironment().run(sends.send_notification, _notification(c)) for c in customers]

    assert [r.status for r in results] == [SendStatus.SENT, SendStatus.SENT]
    assert [(r.body.get("ContentSid"), r.body.get("ContentVariables"), r.body.get("Body")) for r in provider.sends()] \
        == [("HXship", '{"1": "o-7"}', None)] * 2


async def test_outside_the_window_without_a_template_fails_permanently_and_calls_no_provider(
        store_pool: asyncpg.Pool, provider: ProviderStub) -> None:
    store, registry = CustomerStore(store_pool), CollectorRegistry()
    ledger = PostgresLedger(store_pool)
    sends = NotificationActivities({"whatsapp": channels_for(provider.base_url)["whatsapp"]}, ledger=ledger,
                                   contacts=store, inbound=store, metrics=SendMetrics(registry))
    wrote_long_ago, whatsapp, phone = _number(), _number(), _number()
    long_ago = await _customer(store, whatsapp=wrote_long_ago)
    # They wrote an hour ago, but from their phone: the window of that number is not their WhatsApp number's.
    other_number = await _customer(store, whatsapp=whatsapp, phone=phone)
    await _wrote(store_pool, wrote_long_ago, timedelta(hours=25))
    await _wrote(store_pool, phone, timedelta(hours=1))

    for customer in (long_ago, other_number):
        notification = _notification(customer, content_sid="")
        with pytest.raises(ApplicationError) as failed:
            await ActivityEnvironment().run(sends.send_notification, notification)
        assert (failed.value.type, failed.value.non_retryable) == ("OutsideWhatsAppWindow", True)
        assert await ledger.send(notification.idempotency_key) is None, "nothing reserved"

    assert provider.sends() == []
    assert registry.get_sample_value("eventflow_notifications_sent_total", {
        "channel": "whatsapp", "provider": "twilio", "outcome": "failed:OutsideWhatsAppWindow"}) == 2
