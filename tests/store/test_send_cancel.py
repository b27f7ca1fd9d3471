"""An attempt cancelled before its call gives its lease back in the store: no Temporal needed, nothing uncertain."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from temporalio.testing import ActivityEnvironment

from activities.ledger import ReserveRequest
from activities.notifications import SendNotificationInput
from activities.outcomes import LedgerState, ReserveDecision
from activities.send import NotificationActivities, SendPolicy
from events.model import Customer
from store.ledger import PostgresLedger
from tests.activities.journey_support import channels_for
from tests.activities.provider_stub import ProviderStub, provider

__all__ = ["provider"]


class _StallsBeforeTheMark(PostgresLedger):
    """Holds the attempt between its lease and its call mark until it is cancelled."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.waiting = asyncio.Event()

    async def mark_calling(self, idempotency_key: str, attempt: int, provider: str = "") -> bool:
        self.waiting.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_an_attempt_cancelled_before_its_call_releases_its_lease(
        store_pool: asyncpg.Pool, provider: ProviderStub) -> None:
    customer, key = f"c-{uuid.uuid4().hex[:8]}", f"journey:cancel:{uuid.uuid4().hex[:8]}/note"
    ledger = _StallsBeforeTheMark(store_pool)
    sends = NotificationActivities(channels_for(provider.base_url), ledger=ledger,
                                   policy=SendPolicy(lease_seconds=600.0))
    notification = SendNotificationInput(
        idempotency_key=key, channel="email", customer=Customer(id=customer, email="c@example.com"),
        template_id="hello", locale="en", body_template="Hello", subject_template="Hi")
    environment = ActivityEnvironment()
    attempt = asyncio.create_task(environment.run(sends.send_notification, notification))
    await asyncio.wait_for(ledger.waiting.wait(), 30)
    environment.cancel()
    try:
        await attempt
    except BaseException:  # noqa: BLE001 - the cancellation surfaces as the SDK's error or CancelledError
        pass

    row = await ledger.send(key)
    assert row is not None and (row.state, row.called) == (LedgerState.RETRYING, False)
    assert provider.sends() == []
    # The next attempt need not wait out a 10-minute lease, and nothing about it is uncertain.
    again = await PostgresLedger(store_pool).reserve(ReserveRequest(
        idempotency_key=key, customer_id=customer, channel="email", attempt=2, lease_seconds=30.0))
    assert again.decision is ReserveDecision.SEND and not again.previous_attempt_uncertain
