"""Push sends through the ledger on real PostgreSQL: one provider call per device per send, counted at the stubs.

The send activity runs in Temporal's `ActivityEnvironment` (an attempt number is all a retry
changes); the devices live in the customer store; the push service and FCM are local stubs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels import Channel, OutgoingMessage
from activities.circuit import CircuitState
from activities.errors import RetryableSendError
from activities.ledger import ReserveRequest
from activities.links import MessageLinks
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import ReserveDecision, SendStatus
from activities.push import device_id
from activities.push_fcm import FcmChannel, FcmConfig, ServiceAccount
from activities.push_webpush import WebPushChannel, WebPushConfig
from activities.send import NotificationActivities, SendPolicy
from activities.topics import ConsentDefault, Topic, TopicCatalog
from core.errors import ConfigError
from core.preference_links import PreferenceLinks
from core.signing import SigningKeys
from events.model import Customer
from store.consent import ConsentChange, ConsentStore
from store.devices import StoreDevices
from store.ledger import PostgresLedger
from tests.activities.push_stubs import PushStub, push_stub, vapid_key_pem

__all__ = ["push_stub"]

_VARIANT: dict[str, Any] = {"title": "Cart {{ payload.cart }} is waiting", "body": "Your cart holds {{ payload.count }} items",
            "link": "https://shop.example.com/cart/{{ payload.cart }}", "data": {"cart": "{{ payload.cart }}"}}


def _notification(channel: str, customer: str, step: str = "remind") -> SendNotificationInput:
    return SendNotificationInput(
        idempotency_key=f"journey:push:{customer}/{step}", channel=channel, customer=Customer(id=customer),
        template_id="cart", locale="en", body_template=_VARIANT["body"], default_locale="en",
        context={"payload": {"count": 2, "cart": "c-9"}, "customer": {}}, variants={"en": dict(_VARIANT)},
        step_id=step, workflow_id=f"journey:push:{customer}")


def _channels(stub: PushStub, tmp_path: Path) -> dict[str, Channel]:
    pem, public = vapid_key_pem()
    stub.vapid_public_key = public
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(stub.service_account()))
    return {"webpush": WebPushChannel(WebPushConfig(pem, "mailto:ops@example.com")),
            "push": FcmChannel(FcmConfig(ServiceAccount.from_file(key_file), base_url=stub.base_url))}


def _activities(pool: asyncpg.Pool, stub: PushStub, tmp_path: Path, **policy: Any) -> NotificationActivities:
    return NotificationActivities(_channels(stub, tmp_path), ledger=PostgresLedger(pool), devices=StoreDevices(pool),
                                  metrics=SendMetrics(CollectorRegistry()), policy=SendPolicy(**policy))


async def _run(activities: NotificationActivities, notification: SendNotificationInput, attempt: int = 1) -> Any:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=attempt)
    return await environment.run(activities.send_notification, notification)


def _calls(stub: PushStub) -> dict[str, int]:
    return {**{k: len(v) for k, v in stub.webpush.items()}, **{k: len(v) for k, v in stub.fcm.items()}}


async def test_every_browser_gets_one_rendered_push_and_a_gone_one_is_removed(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    activities = _activities(store_pool, push_stub, tmp_path)
    laptop, phone, old = push_stub.browser(), push_stub.browser(), push_stub.browser()
    for browser in (laptop, phone, old):
        await devices.add_device(customer, "webpush", browser.subscription(), "web")
    push_stub.gone.add(old.sub_id)
    result = await _run(activities, _notification("webpush", customer))
    assert result.status is SendStatus.SENT and result.provider == "webpush"
    assert _calls(push_stub) == {laptop.sub_id: 1, phone.sub_id: 1}
    shown = push_stub.webpush[laptop.sub_id][0]
    assert (shown["title"], shown["body"], shown["link"], shown["data"]) == (
        "Cart c-9 is waiting", "Your cart holds 2 items", "https://shop.example.com/cart/c-9", {"cart": "c-9"})
    remaining = {d.device_id for d in await devices.devices(customer, "webpush")}
    assert remaining == {device_id("webpush", laptop.subscription()), device_id("webpush", phone.subscription())}
    again = await _run(activities, _notification("webpush", customer), attempt=2)
    assert again.status is SendStatus.DUPLICATE and _calls(push_stub) == {laptop.sub_id: 1, phone.sub_id: 1}


async def test_a_retry_after_a_failed_device_calls_only_that_device(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    activities = _activities(store_pool, push_stub, tmp_path)
    for token in ("tok-a", "tok-b", "tok-c"):
        await devices.add_device(customer, "push", f"{token}-{customer}", "android")
    push_stub.unavailable_once.add(f"tok-b-{customer}")
    with pytest.raises(ApplicationError) as failed:
        await _run(activities, _notification("push", customer))
    assert failed.value.type == "ProviderUnavailable" and not failed.value.non_retryable
    result = await _run(activities, _notification("push", customer), attempt=2)
    assert result.status is SendStatus.SENT
    assert _calls(push_stub) == {f"{t}-{customer}": 1 for t in ("tok-a", "tok-b", "tok-c")}
    assert len(push_stub.tokens_issued) == 1


async def test_a_device_an_interrupted_attempt_called_is_not_called_again(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices, ledger = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool), PostgresLedger(store_pool)
    activities = _activities(store_pool, push_stub, tmp_path, lease_seconds=30.0)
    first = await devices.add_device(customer, "push", f"tok-1-{customer}")
    await devices.add_device(customer, "push", f"tok-2-{customer}")
    notification = _notification("push", customer)
    # An attempt that took the lease, marked the send and its first device, and died; its lease is taken
    # as run out (lease_seconds 0 grants none) rather than waited for.
    crashed = await ledger.reserve(ReserveRequest(notification.idempotency_key, customer, "push", attempt=1))
    assert crashed.decision is ReserveDecision.SEND
    assert await ledger.mark_calling(notification.idempotency_key, 1)
    assert await ledger.mark_device_calling(notification.idempotency_key, 1, first.device_id)
    result = await _run(activities, notification, attempt=2)
    assert result.status is SendStatus.SENT and _calls(push_stub) == {f"tok-2-{customer}": 1}


async def test_quiet_hours_and_caps_count_a_push_send_once_whatever_its_devices(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    for token in ("tok-x", "tok-y"):
        await devices.add_device(customer, "push", f"{token}-{customer}")
    quiet = _activities(store_pool, push_stub, tmp_path, quiet_hours="00:00-23:59")
    deferred = await _run(quiet, _notification("push", customer, "quiet"))
    assert deferred.status is SendStatus.DEFERRED and _calls(push_stub) == {}
    capped = _activities(store_pool, push_stub, tmp_path, caps=_caps("push:day=1"))
    assert (await _run(capped, _notification("push", customer, "first"))).status is SendStatus.SENT
    assert (await _run(capped, _notification("push", customer, "second"))).status is SendStatus.CAPPED
    assert _calls(push_stub) == {f"tok-x-{customer}": 1, f"tok-y-{customer}": 1}


async def test_a_customer_whose_every_token_is_unregistered_fails_for_good_and_has_none_left(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    activities = _activities(store_pool, push_stub, tmp_path)
    await devices.add_device(customer, "push", f"tok-old-{customer}", "ios")
    push_stub.gone.add(f"tok-old-{customer}")
    with pytest.raises(ApplicationError) as failed:
        await _run(activities, _notification("push", customer))
    assert failed.value.type == "DeviceUnregistered" and failed.value.non_retryable
    assert await devices.devices(customer, "push") == []
    result = await _run(activities, _notification("push", customer, "later"))
    assert result.status is SendStatus.NO_CONTACT


class _Unavailable:
    """An email provider that is down: with it first, email fails over; push must not notice."""

    reconciles = False
    call_timeout_seconds = 1.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        self.calls += 1
        raise RetryableSendError("503", provider=self.name, status=503)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None


class _ReadsItsMark:
    """The FCM channel, reading the send's row as each device call leaves: which provider does the ledger name?"""

    def __init__(self, inner: FcmChannel, pool: asyncpg.Pool) -> None:
        self._inner, self._pool = inner, pool
        self.name, self.reconciles, self.call_timeout_seconds = inner.name, inner.reconciles, inner.call_timeout_seconds
        self.marked: list[str | None] = []

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        self.marked.append(await self._pool.fetchval(
            "SELECT provider FROM eventflow.sends WHERE idempotency_key = $1 AND called_at IS NOT NULL",
            message.idempotency_key))
        return await self._inner.deliver(message)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None


async def test_beside_email_failover_a_push_send_names_its_provider_and_does_not_fail_over(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    fcm = _channels(push_stub, tmp_path)["push"]
    assert isinstance(fcm, FcmChannel)
    push, down, spare = _ReadsItsMark(fcm, store_pool), _Unavailable("sendgrid"), _Unavailable("smtp")
    channels: dict[str, Channel | tuple[Channel, ...]] = {"email": (down, spare), "push": push}
    metrics = SendMetrics(CollectorRegistry())
    activities = NotificationActivities(channels, ledger=PostgresLedger(store_pool), devices=devices, metrics=metrics)
    for token in ("tok-p", "tok-q"):
        await devices.add_device(customer, "push", f"{token}-{customer}", "android")
    push_stub.unavailable_once.add(f"tok-p-{customer}")
    with pytest.raises(ApplicationError) as failed:
        await _run(activities, _notification("push", customer))
    assert failed.value.type == "ProviderUnavailable" and not failed.value.non_retryable
    result = await _run(activities, _notification("push", customer), attempt=2)
    assert result.status is SendStatus.SENT and _calls(push_stub) == {f"tok-p-{customer}": 1, f"tok-q-{customer}": 1}
    # Every device call (the refused one too) left with the ledger naming FCM; no breaker, no failover,
    # no email provider called.
    assert len(push.marked) >= 3 and set(push.marked) == {push.name}
    assert activities.circuit("push", push.name) is None
    assert activities.circuit("email", "sendgrid") is CircuitState.CLOSED
    assert [sample for family in metrics.failovers.collect() for sample in family.samples] == []
    assert down.calls == spare.calls == 0


def test_a_push_channel_given_a_provider_list_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        NotificationActivities({"webpush": (_Unavailable("webpush"), _Unavailable("other"))})
    assert refused.value.variable == "EVENTFLOW_WEBPUSH_PROVIDER"


def _caps(text: str) -> Any:
    from activities.caps import CapSet

    return CapSet.parse(text)


async def test_a_push_send_of_an_opt_in_topic_waits_for_consent_and_links_the_preference_page(
        store_pool: asyncpg.Pool, push_stub: PushStub, tmp_path: Path) -> None:
    customer, devices = f"c-{uuid.uuid4().hex}", StoreDevices(store_pool)
    token = f"tok-news-{customer}"
    await devices.add_device(customer, "push", token, "android")
    topics = TopicCatalog((Topic("news", {"en": "News"}, default=ConsentDefault.OPTED_OUT),))
    links = MessageLinks(PreferenceLinks(SigningKeys.parse("k1=" + base64.b64encode(b"k" * 32).decode())),
                         "https://prefs.example.com", page_seconds=3600, unsubscribe_seconds=3600)
    activities = NotificationActivities(_channels(push_stub, tmp_path), ledger=PostgresLedger(store_pool),
                                        devices=devices, topics=topics, links=links)
    variant = {**_VARIANT, "data": {"prefs": "{{ preferences_url }}"}}
    notification = dataclasses.replace(_notification("push", customer), topic="news", variants={"en": variant})

    skipped = await _run(activities, notification)
    assert (skipped.status, skipped.error_type) == (SendStatus.SKIPPED, "no_consent") and _calls(push_stub) == {}

    await ConsentStore(store_pool).apply(customer, [ConsentChange("push", "news", True)], topics, source="test")
    sent = await _run(activities, notification, attempt=2)
    assert sent.status is SendStatus.SENT and _calls(push_stub) == {token: 1}
    assert push_stub.fcm[token][0]["data"]["prefs"].startswith("https://prefs.example.com/p/")
