"""A send worker on the customer store, in its own process, so a test can kill it at a chosen point.

Usage: ``python -m tests.store.crash_sender <temporal> <task queue> <provider url> <dsn> <mode> <lease s> <window s>``.

Modes: ``send`` calls the provider as usual; ``stop-before-mark`` takes the lease, prints
``marking`` and never marks (a process that dies between its lease and its mark);
``stop-before-call`` marks the call, prints ``calling`` and never makes it (a process that dies
after its mark and before its request).
It runs only the email send activity, with one activity poller.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from activities.channels import Channel, OutgoingMessage
from activities.notifications import SendResult
from activities.send import NotificationActivities, SendPolicy
from store.ledger import PostgresLedger
from store.pool import create_pool
from tests.activities.journey_support import channels_for
from tests.payload_keys import session_data_converter
from workflows.queues import send_task_queue


class _StopsBeforeCall:
    """The real channel, except that its call never leaves."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self.name = channel.name

    @property
    def reconciles(self) -> bool:
        return self._channel.reconciles

    @property
    def call_timeout_seconds(self) -> float:
        return self._channel.call_timeout_seconds

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        print("calling", flush=True)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return await self._channel.reconcile(message, since_epoch_seconds)


class _StopsBeforeMark(PostgresLedger):
    async def mark_calling(self, idempotency_key: str, attempt: int, provider: str = "") -> bool:
        print("marking", flush=True)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def main(address: str, task_queue: str, base_url: str, dsn: str, mode: str, lease: str, window: str) -> None:
    client = await Client.connect(address, data_converter=session_data_converter())
    pool = await create_pool(dsn, min_size=1, max_size=4)
    channels = channels_for(base_url)
    if mode == "stop-before-call":
        channels = {**channels, "email": _StopsBeforeCall(channels["email"])}
    ledger = _StopsBeforeMark(pool) if mode == "stop-before-mark" else PostgresLedger(pool)
    sends = NotificationActivities(channels, ledger=ledger, policy=SendPolicy(
        lease_seconds=float(lease), providers_reporting=frozenset({"sendgrid"}), report_window_seconds=float(window),
        report_poll_seconds=0.2))
    async with Worker(client, task_queue=send_task_queue(task_queue, "email"), activities=[sends.send_notification],
                      max_concurrent_activity_task_polls=1):
        print("worker-ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
