"""Email failover from SendGrid to SMTP on the real PostgreSQL ledger: one provider per send, counted at both.

Consent per topic is decided before the provider chain: a send without consent calls no provider and
moves no breaker, and one that fails over carries its List-Unsubscribe headers to SMTP.

SendGrid is the local provider stub, SMTP a local ``aiosmtpd`` server; sends run through the send
activity (``ActivityEnvironment``, one call per activity attempt) against a migrated store.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels import Channel, OutgoingMessage
from activities.circuit import CircuitPolicy, CircuitState
from activities.email_sendgrid import IDEMPOTENCY_HEADER, SendGridChannel, SendGridConfig
from activities.email_smtp import SmtpChannel, SmtpConfig, SmtpSecurity
from activities.links import MessageLinks
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import LedgerState, SendStatus
from activities.send import NotificationActivities, SendPolicy, UncertainDelivery
from activities.topics import ConsentDefault, SkipReason, Topic, TopicCatalog
from core.preference_links import PreferenceLinks
from core.signing import SigningKeys
from events.model import Customer
from store.consent import ConsentChange, ConsentStore
from store.ledger import PostgresLedger
from tests.activities.provider_stub import ProviderStub, Reply, provider

__all__ = ["provider"]


@dataclass
class _Inbox:
    """Every message the SMTP server accepted, by the idempotency key it carries."""

    keys: list[str] = field(default_factory=list)
    #: The List-Unsubscribe header of each message that had one, by idempotency key.
    unsubscribe: dict[str, str] = field(default_factory=dict)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        key = str(message[IDEMPOTENCY_HEADER])
        self.keys.append(key)
        if message["List-Unsubscribe"] is not None:
            self.unsubscribe[key] = str(message["List-Unsubscribe"])
        return "250 OK queued"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class _ClaimsShortCalls:
    """SendGrid whose client claims a 1 s bound that the call then overruns (ADR-9: urllib's timeout is per
    socket operation, so a slow server can keep one call going past the lease)."""

    name = "sendgrid"
    reconciles = False
    call_timeout_seconds = 1.0

    def __init__(self, inner: SendGridChannel) -> None:
        self._inner = inner

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        return await self._inner.deliver(message)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None


def _sendgrid(stub: ProviderStub, timeout_seconds: float = 5.0) -> SendGridChannel:
    return SendGridChannel(SendGridConfig(api_key="SG.test-key", from_email="shop@example.com",
                                          base_url=stub.base_url, timeout_seconds=timeout_seconds))


def _smtp(port: int) -> SmtpChannel:
    return SmtpChannel(SmtpConfig(host="127.0.0.1", port=port, from_email="shop@example.com",
                                  security=SmtpSecurity.NONE, timeout_seconds=5.0))


def _notification(customer: str) -> SendNotificationInput:
    return SendNotificationInput(
        idempotency_key=f"journey:failover:{uuid.uuid4().hex[:10]}/note", channel="email",
        customer=Customer(id=customer, email="ada@example.com"), template_id="hello", locale="en",
        body_template="Order 42 is in.", subject_template="Hi")


def _attempt(number: int) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=number)
    return environment


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_sendgrid_answering_503_fails_over_to_smtp_once_per_send_and_its_circuit_opens(
        store_pool: asyncpg.Pool, provider: ProviderStub, smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    registry = CollectorRegistry()
    ledger = PostgresLedger(store_pool)
    channels: tuple[Channel, ...] = (_sendgrid(provider), _smtp(port))
    sends = NotificationActivities({"email": channels}, ledger=ledger, metrics=SendMetrics(registry),
                                   circuit=CircuitPolicy(failure_threshold=2, open_seconds=600.0))
    provider.reply(*[Reply(503, {"errors": [{"message": "service unavailable"}]})] * 3)
    notifications = [_notification(f"c-{uuid.uuid4().hex[:8]}") for _ in range(3)]

    results = [await ActivityEnvironment().run(sends.send_notification, n) for n in notifications]

    keys = [n.idempotency_key for n in notifications]
    assert [(r.status, r.provider) for r in results] == [(SendStatus.SENT, "smtp")] * 3
    assert sorted(k for k in inbox.keys if k in keys) == sorted(keys), "SMTP received each send once"
    # One failed attempt at SendGrid for each of the first two; the open circuit skipped it for the third.
    assert provider.sends_by_key() == {keys[0]: 1, keys[1]: 1}
    assert provider.accepted_by_key() == {}
    for key in keys:
        row = await ledger.send(key)
        assert row is not None and (row.state, row.provider, row.called) == (LedgerState.DELIVERED, "smtp", True)
    assert sends.circuit("email", "sendgrid") is CircuitState.OPEN
    assert sends.circuit("email", "smtp") is CircuitState.CLOSED
    gauge = "eventflow_provider_circuit_state"
    assert _sample(registry, gauge, channel="email", provider="sendgrid") == 2
    assert _sample(registry, gauge, channel="email", provider="smtp") == 0
    assert _sample(registry, "eventflow_send_failovers_total", channel="email", from_provider="sendgrid",
                   to_provider="smtp") == 3
    assert _sample(registry, "eventflow_notifications_sent_total", channel="email", provider="smtp",
                   outcome="sent") == 3


async def test_sendgrid_accepting_slowly_past_the_lease_calls_no_second_provider(
        store_pool: asyncpg.Pool, provider: ProviderStub, smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    ledger = PostgresLedger(store_pool)
    sends = NotificationActivities(
        {"email": (_ClaimsShortCalls(_sendgrid(provider, timeout_seconds=30.0)), _smtp(port))}, ledger=ledger,
        policy=SendPolicy(lease_seconds=3.0, lease_margin_seconds=0.5, lease_poll_seconds=0.2))
    notification = _notification(f"c-{uuid.uuid4().hex[:8]}")
    key = notification.idempotency_key
    provider.hold()  # SendGrid takes the message and does not answer until released

    first = asyncio.create_task(_attempt(1).run(sends.send_notification, notification))
    await asyncio.wait_for(provider.held.wait(), 30)
    # Attempt 2 waits out attempt 1's lease, then finds its call marked at SendGrid and unanswered.
    second = await asyncio.wait_for(_attempt(2).run(sends.send_notification, notification), 30)
    provider.release()
    late = await asyncio.wait_for(first, 30)

    assert (second.status, second.provider) == (SendStatus.UNCERTAIN, "sendgrid"), "settled at SendGrid, not moved"
    assert (late.status, late.provider) == (SendStatus.SENT, "sendgrid")
    assert key not in inbox.keys, "SMTP was never called for this send"
    assert provider.sends_by_key() == {key: 1}
    row = await ledger.send(key)
    assert row is not None and (row.state, row.provider) == (LedgerState.DELIVERED, "sendgrid"), "the truth wins"


async def test_a_send_uncertain_at_sendgrid_stays_there_even_with_its_circuit_open(
        store_pool: asyncpg.Pool, provider: ProviderStub, smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    ledger = PostgresLedger(store_pool)
    sends = NotificationActivities(
        {"email": (_sendgrid(provider, timeout_seconds=1.0), _smtp(port))}, ledger=ledger,
        policy=SendPolicy(uncertain_delivery=UncertainDelivery.AT_LEAST_ONCE),
        circuit=CircuitPolicy(failure_threshold=1, open_seconds=600.0))
    notification = _notification(f"c-{uuid.uuid4().hex[:8]}")
    key = notification.idempotency_key

    provider.hold()  # accepted, answered too late: the client times out after sending
    with pytest.raises(ApplicationError):
        await _attempt(1).run(sends.send_notification, notification)
    provider.release()
    assert sends.circuit("email", "sendgrid") is CircuitState.OPEN
    row = await ledger.send(key)
    assert row is not None and (row.state, row.provider) == (LedgerState.UNCERTAIN, "sendgrid")

    # Resent blindly (at_least_once) at SendGrid only; its 503 keeps the doubt, and the send stays there.
    provider.reply(Reply(503, {"errors": [{"message": "service unavailable"}]}))
    with pytest.raises(ApplicationError):
        await _attempt(2).run(sends.send_notification, notification)
    row = await ledger.send(key)
    assert row is not None and (row.state, row.provider) == (LedgerState.UNCERTAIN, "sendgrid")
    third = await _attempt(3).run(sends.send_notification, notification)

    assert (third.status, third.provider) == (SendStatus.SENT, "sendgrid")
    assert key not in inbox.keys
    assert provider.sends_by_key() == {key: 3}


async def test_topic_consent_is_decided_before_failover_and_the_failed_over_email_keeps_its_headers(
        store_pool: asyncpg.Pool, provider: ProviderStub, smtp_server: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_server
    topics = TopicCatalog((Topic("news", {"en": "News"}, channels=("email",), default=ConsentDefault.OPTED_OUT),))
    links = MessageLinks(PreferenceLinks(SigningKeys.parse("k1=" + base64.b64encode(b"k" * 32).decode())),
                         "https://preferences.example.com", page_seconds=3600, unsubscribe_seconds=3600)
    sends = NotificationActivities({"email": (_sendgrid(provider), _smtp(port))}, ledger=PostgresLedger(store_pool),
                                   circuit=CircuitPolicy(failure_threshold=2, open_seconds=600.0), topics=topics,
                                   links=links)
    journey, unique = "news_digest", uuid.uuid4().hex[:8]

    def news(customer: str) -> SendNotificationInput:
        workflow_id = f"journey:{journey}:{customer}"
        return dataclasses.replace(_notification(customer), idempotency_key=f"{workflow_id}/news", topic="news",
                                   workflow_id=workflow_id, journey_id=journey, step_id="news",
                                   context={"journey": {"id": journey, "version": 1}})

    subscribed, never_chose = f"c-yes-{unique}", f"c-no-{unique}"
    await ConsentStore(store_pool).apply(subscribed, [ConsentChange("email", "news", subscribed=True)], topics,
                                         source="test")
    provider.reply(Reply(503, {"errors": [{"message": "service unavailable"}]}))
    sent = await ActivityEnvironment().run(sends.send_notification, news(subscribed))
    skipped = await ActivityEnvironment().run(sends.send_notification, news(never_chose))

    assert (sent.status, sent.provider) == (SendStatus.SENT, "smtp")
    assert (skipped.status, skipped.error_type) == (SendStatus.SKIPPED, SkipReason.NO_CONSENT.value)
    sent_key, skipped_key = news(subscribed).idempotency_key, news(never_chose).idempotency_key
    assert provider.sends_by_key() == {sent_key: 1}, "the skipped send reached no provider"
    assert skipped_key not in inbox.keys
    assert inbox.unsubscribe[sent_key].startswith("<https://preferences.example.com/u/"), "headers survive failover"
    assert sends.circuit("email", "sendgrid") is CircuitState.CLOSED, "one 503 only: the skip moved no breaker"
    rows = await store_pool.fetch("SELECT customer_id, kind FROM eventflow.journey_events WHERE journey_id = $1"
                                  " AND customer_id = ANY($2)", journey, [subscribed, never_chose])
    assert [tuple(row) for row in rows] == [(subscribed, "sent")], "only the delivered send is in the funnel"
