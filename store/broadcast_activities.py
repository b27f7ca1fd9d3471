"""The ``Broadcast`` workflow's activities: fix the audience, and send one paced batch.

A batch sends to its recipients concurrently through `NotificationActivities.send` (the same
rendering, ledger lease, consent, suppression, quiet hours and caps as a journey's send), each with
the key ``broadcast:<id>:<customer>``. The recipients' profiles are read with the batch, in the
statement that picks them (given a `CustomerStore` to open them with), rather than once per
recipient: an address is then at most one batch old when it is sent to. What became of each send is
recorded in the same transaction that holds the broadcast row ``FOR SHARE``; a batch that dies
before recording is redone, and the ledger answers ``duplicate`` for the sends it already made.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contact import ContactPoints, pick_locale
from activities.errors import PERMANENT_ERROR_TYPES
from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import SendStatus
from activities.send import NotificationActivities
from core.ids import join_id
from events.model import Customer
from store.broadcasts import (
    BroadcastMessage,
    BroadcastState,
    BroadcastStore,
    Recipient,
    RecipientResult,
    RecipientState,
)
from store.customers import CustomerStore
from workflows.broadcast import (
    SEND_BROADCAST_BATCH,
    START_BROADCAST,
    BatchInput,
    BatchResult,
    StartResult,
    broadcast_workflow_id,
)

#: After this many attempts a recipient whose send keeps failing transiently is skipped, recorded.
MAX_ATTEMPTS = 20
_DONE = {SendStatus.SENT: (RecipientState.SENT, ""), SendStatus.DUPLICATE: (RecipientState.SENT, "")}


class BroadcastMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.recipients = Counter("eventflow_broadcast_recipients", "Broadcast recipients handled, by what became "
                                  "of their send (sent, or skipped with the reason).", ["state", "reason"],
                                  registry=registry)


class _Read:
    """One recipient's contact points, as the batch read them (a `ContactDirectory` of one)."""

    def __init__(self, customer_id: str, points: ContactPoints) -> None:
        self._customer_id = customer_id
        self._points = points

    async def contact_points(self, customer_id: str) -> ContactPoints:
        return self._points if customer_id == self._customer_id else ContactPoints()


class BroadcastActivities:
    """The broadcast activities; ``contacts`` opens the profiles the batch reads (without it, each
    send asks the sender's own directory)."""

    def __init__(self, store: BroadcastStore, sender: NotificationActivities, *, concurrency: int = 16,
                 metrics: BroadcastMetrics | None = None, contacts: CustomerStore | None = None) -> None:
        self._store = store
        self._sender = sender
        self._concurrency = concurrency
        self._metrics = metrics or BroadcastMetrics(CollectorRegistry())
        self._contacts = contacts

    @activity.defn(name=START_BROADCAST)
    async def start(self, broadcast_id: str) -> StartResult:
        """Waits for the broadcast's time, then fixes its audience (once)."""
        broadcast = await self._store.get(broadcast_id)
        if broadcast.state is BroadcastState.SCHEDULED and broadcast.send_at > datetime.now(UTC):
            return StartResult(broadcast.state.value, wait_until=broadcast.send_at.isoformat())
        state, planned = await self._store.fix_audience(broadcast_id)
        return StartResult(state.value, planned)

    @activity.defn(name=SEND_BROADCAST_BATCH)
    async def send_batch(self, batch: BatchInput) -> BatchResult:
        async with self._store.batch(batch.broadcast_id) as (state, conn):
            if state is BroadcastState.CANCELLED:
                return BatchResult(0, 0, cancelled=True)
            broadcast = await self._store.get(batch.broadcast_id)
            recipients = await self._store.due(conn, batch.broadcast_id, batch.limit)
            gate = asyncio.Semaphore(self._concurrency)

            async def one(recipient: Recipient) -> RecipientResult:
                async with gate:
                    return await self._send(batch.broadcast_id, broadcast.message, recipient)

            results = await asyncio.gather(*(one(r) for r in recipients))
            await self._store.record(conn, batch.broadcast_id, list(results))
            remaining, next_due = await self._store.remaining(conn, batch.broadcast_id)
        for result in results:
            if result.state is not RecipientState.PENDING:
                self._metrics.recipients.labels(result.state.value, result.reason).inc()
        if remaining == 0:
            await self._store.finish(batch.broadcast_id)
        handled = sum(1 for r in results if r.state is not RecipientState.PENDING)
        return BatchResult(handled, remaining, next_due.isoformat() if next_due else None)

    async def _send(self, broadcast_id: str, message: BroadcastMessage, recipient: Recipient) -> RecipientResult:
        # The journeys' rule (exact locale, else its language, else the default), as `workflows.sending` picks.
        locale = pick_locale(recipient.locale or message.default_locale, message.variants, message.default_locale)
        variant = message.variants.get(locale) or next(iter(message.variants.values()))
        workflow_id = broadcast_workflow_id(broadcast_id)
        notification = SendNotificationInput(
            idempotency_key=join_id("broadcast", broadcast_id, recipient.customer_id),
            channel=message.channel,
            customer=Customer(id=recipient.customer_id, timezone=recipient.timezone or "UTC",
                              locale=recipient.locale or message.default_locale),
            template_id=message.template_id, locale=locale,
            body_template=str(variant.get("body", "")), subject_template=variant.get("subject"),
            context={"broadcast": {"id": broadcast_id}}, workflow_id=workflow_id, journey_id=workflow_id,
            step_id="send", priority=message.priority, topic=message.topic,
            variants={k: dict(v) for k, v in message.variants.items()}, default_locale=message.default_locale,
            html_template=variant.get("html") or None,
            provider_template_id=str(variant.get("content_sid") or variant.get("sendgrid_template_id") or ""),
            template_variable_templates={str(k): str(v) for k, v in (variant.get("content_variables") or {}).items()})
        directory = None if self._contacts is None else _Read(
            recipient.customer_id, self._contacts.contact_points_of(recipient.customer_id, recipient.profile))
        try:
            result: SendResult = await self._sender.send(notification, contacts=directory)
        except ApplicationError as exc:
            if exc.non_retryable or exc.type in PERMANENT_ERROR_TYPES or recipient.attempts + 1 >= MAX_ATTEMPTS:
                return RecipientResult(recipient.customer_id, RecipientState.SKIPPED, f"failed:{exc.type or 'Error'}")
            return RecipientResult(recipient.customer_id, RecipientState.PENDING)
        status = SendStatus(result.status)
        if status in _DONE:
            state, reason = _DONE[status]
            return RecipientResult(recipient.customer_id, state, reason)
        if status is SendStatus.DEFERRED and result.not_before:
            return RecipientResult(recipient.customer_id, RecipientState.PENDING,
                                   due_at=datetime.fromisoformat(result.not_before))
        # A skip says why (``no_consent``), as a journey records ``skipped:<reason>``; other statuses name themselves.
        reason = result.error_type if status is SendStatus.SKIPPED and result.error_type else status.value
        return RecipientResult(recipient.customer_id, RecipientState.SKIPPED, reason)
