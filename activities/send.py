"""The send activity: preferences and ledger first, then render, rate-limit and hand to the channel.

Order of one attempt: render (a broken template is permanent and reserves nothing), reserve in the
delivery ledger (opt-out, quiet hours, frequency cap, already delivered?), reconcile with the
provider if an earlier attempt was interrupted, wait for the provider's token bucket, call the
provider while heartbeating, record the outcome in the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from prometheus_client import CollectorRegistry
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import Channel, OutgoingMessage
from activities.errors import PermanentSendError, RetryableSendError
from activities.ledger import Completion, DeliveryLedger, ReserveRequest
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput, SendResult
from activities.ratelimit import TokenBucket
from activities.rendering import TemplateRenderError, render
from eventflow.logs import mask_contact_details

SEND_NOTIFICATION = "send_notification"

T = TypeVar("T")


@dataclass(frozen=True)
class SendPolicy:
    """Worker-wide defaults a journey step may override.

    Attributes:
        quiet_hours: ``"HH:MM-HH:MM"`` in the customer's timezone, ``""`` for none.
        daily_cap: sends per channel per local calendar day, 0 for no cap.
        heartbeat_interval_seconds: how often a long provider call heartbeats.
    """

    quiet_hours: str = ""
    daily_cap: int = 0
    heartbeat_interval_seconds: float = 2.0


class NotificationActivities:
    """Activity implementations bound to the configured channels (one per channel name)."""

    def __init__(self, channels: Mapping[str, Channel], *, ledger: DeliveryLedger | None = None,
                 metrics: SendMetrics | None = None, policy: SendPolicy | None = None) -> None:
        self._channels = dict(channels)
        self._ledger = ledger
        self._metrics = metrics or SendMetrics(CollectorRegistry())
        self._policy = policy or SendPolicy()

    @property
    def metrics(self) -> SendMetrics:
        return self._metrics

    def _count(self, notification: SendNotificationInput, provider: str, outcome: str) -> None:
        self._metrics.sent.labels(notification.channel, provider, outcome).inc()

    @activity.defn(name=SEND_NOTIFICATION)
    async def send_notification(self, notification: SendNotificationInput) -> SendResult:
        channel = self._channels.get(notification.channel)
        if channel is None:
            raise ApplicationError(f"no channel configured for {notification.channel!r}",
                                   type="ChannelNotConfigured", non_retryable=True)
        address = notification.customer.email if notification.channel == "email" else notification.customer.phone
        if not address:
            raise ApplicationError(f"customer has no address for {notification.channel}",
                                   type="MissingAddress", non_retryable=True)
        message = _render(notification, address)
        result = await self._send(notification, channel, message)
        activity.logger.info("notification_%s channel=%s provider=%s template=%s", result.status,
                             notification.channel, result.provider, notification.template_id)
        return result

    async def _send(self, notification: SendNotificationInput, channel: Channel,
                    message: OutgoingMessage) -> SendResult:
        started = time.time()
        if self._ledger is not None:
            reservation = await self._ledger.reserve(ReserveRequest(
                idempotency_key=notification.idempotency_key,
                customer_id=notification.customer.id,
                channel=notification.channel,
                timezone=notification.customer.timezone or "UTC",
                quiet_hours=self._policy.quiet_hours if notification.quiet_hours is None else notification.quiet_hours,
                daily_cap=self._policy.daily_cap if notification.daily_cap is None else notification.daily_cap,
                on_cap=notification.on_cap,
                now_epoch_seconds=started,
            ))
            if reservation.decision == "delivered":
                self._count(notification, reservation.provider or channel.name, "duplicate")
                return SendResult("duplicate", reservation.provider or channel.name,
                                  reservation.provider_message_id)
            if reservation.decision in ("opted_out", "capped"):
                self._count(notification, channel.name, reservation.decision)
                return SendResult(reservation.decision, channel.name)
            if reservation.decision == "defer":
                self._count(notification, channel.name, "deferred")
                return SendResult("deferred", channel.name, not_before=reservation.not_before)
            if reservation.previous_attempt_uncertain:
                earlier = await _heartbeating(channel.reconcile(message, reservation.previous_started_epoch_seconds),
                                              self._policy.heartbeat_interval_seconds)
                if earlier is not None:
                    await self._complete(notification, "delivered", earlier)
                    self._count(notification, earlier.provider, "duplicate")
                    return SendResult("duplicate", earlier.provider, earlier.provider_message_id)
        limiter = getattr(channel, "limiter", None)
        if isinstance(limiter, TokenBucket):
            waited = await _heartbeating(limiter.acquire(), self._policy.heartbeat_interval_seconds)
            self._metrics.rate_limit_wait_seconds.labels(channel.name).inc(waited)
        call_started = time.monotonic()
        try:
            result = await _heartbeating(channel.deliver(message), self._policy.heartbeat_interval_seconds)
        except RetryableSendError as exc:
            await self._complete(notification, "uncertain" if exc.delivery_uncertain else "retrying",
                                 SendResult("", exc.provider))
            self._count(notification, exc.provider, exc.error_type)
            delay = timedelta(seconds=exc.retry_after_seconds) if exc.retry_after_seconds is not None else None
            raise ApplicationError(mask_contact_details(str(exc)), type=exc.error_type,
                                   next_retry_delay=delay) from exc
        except PermanentSendError as exc:
            await self._complete(notification, f"failed:{exc.error_type}", SendResult("", exc.provider))
            self._count(notification, exc.provider, f"failed:{exc.error_type}")
            raise ApplicationError(mask_contact_details(str(exc)), type=exc.error_type, non_retryable=True) from exc
        finally:
            self._metrics.send_seconds.labels(notification.channel, channel.name).observe(
                time.monotonic() - call_started)
        await self._complete(notification, "delivered" if result.status in ("sent", "duplicate") else result.status,
                             result)
        self._count(notification, result.provider, result.status)
        return result

    async def _complete(self, notification: SendNotificationInput, outcome: str, result: SendResult) -> None:
        if self._ledger is None:
            return
        await self._ledger.complete(Completion(
            idempotency_key=notification.idempotency_key,
            customer_id=notification.customer.id,
            channel=notification.channel,
            outcome=outcome,
            provider=result.provider,
            provider_message_id=result.provider_message_id,
        ))


def _render(notification: SendNotificationInput, address: str) -> OutgoingMessage:
    try:
        body = render(notification.template_id, notification.body_template, notification.context)
        subject = (render(notification.template_id, notification.subject_template, notification.context)
                   if notification.subject_template else None)
        variables = {name: render(notification.template_id, source, notification.context)
                     for name, source in notification.template_variable_templates.items()}
    except TemplateRenderError as exc:
        raise ApplicationError(str(exc), type="TemplateRenderError", non_retryable=True) from exc
    return OutgoingMessage(
        idempotency_key=notification.idempotency_key,
        channel=notification.channel,
        to=address,
        body=body,
        subject=subject,
        template_id=notification.template_id,
        locale=notification.locale,
        workflow_id=notification.workflow_id,
        provider_template_id=notification.provider_template_id,
        template_variables=variables,
    )


async def _heartbeating(call: Awaitable[T], interval_seconds: float) -> T:
    """Awaits ``call``, heartbeating meanwhile so a crashed worker is noticed within the heartbeat timeout."""
    task = asyncio.ensure_future(call)
    while True:
        done, _ = await asyncio.wait({task}, timeout=interval_seconds)
        if done:
            return task.result()
        if activity.in_activity():
            activity.heartbeat()
