"""A broadcast worker in its own process, so a test can kill -9 it mid-broadcast.

Usage: ``python -m tests.store.broadcast_worker <temporal> <task queue> <provider url> <dsn>``; prints
``worker-ready`` once polling. Runs the ``Broadcast`` workflow and its activities with the SendGrid
channel pointed at the provider stub, on the customer store.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client

from activities.send import NotificationActivities, SendPolicy
from activities.topics import TopicCatalog
from store import CustomerStore, FieldCipher, PostgresLedger
from store.broadcast_activities import BroadcastActivities
from store.broadcasts import BroadcastStore
from store.pool import create_pool
from tests.activities.journey_support import channels_for
from tests.payload_keys import session_data_converter
from workflows.worker import build_worker


def worker(client: Client, task_queue: str, base_url: str, pool: object,
           policy: SendPolicy | None = None, topics: TopicCatalog | None = None):
    """The worker both the killed process and the test's successor run."""
    def broadcasting(sender: NotificationActivities) -> list[object]:
        activities = BroadcastActivities(BroadcastStore(pool), sender,  # type: ignore[arg-type]
                                         contacts=CustomerStore(pool, FieldCipher(None)))  # type: ignore[arg-type]
        return [activities.start, activities.send_batch]

    return build_worker(client, task_queue, channels_for(base_url), ledger=PostgresLedger(pool),  # type: ignore[arg-type]
                        contacts=CustomerStore(pool, FieldCipher(None)), broadcasts=broadcasting,  # type: ignore[arg-type]
                        policy=policy or SendPolicy(lease_seconds=8.0), topics=topics)


async def main(address: str, task_queue: str, base_url: str, dsn: str) -> None:
    client = await Client.connect(address, data_converter=session_data_converter())
    pool = await create_pool(dsn, min_size=1, max_size=8)
    async with worker(client, task_queue, base_url, pool):
        print("worker-ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
