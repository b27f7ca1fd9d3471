"""A journey worker in its own process, so a test can kill or freeze it mid-send.

Usage: ``python -m tests.activities.crash_worker <temporal address> <task queue> <provider base url> [lease s]``.

With a lease it runs only the send activity for email, with one activity poller: a frozen process then
holds at most one poll open (a poll the server answers while the process is frozen swallows that
activity task until its heartbeat timeout), and the test runs the workflows itself.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from activities.send import NotificationActivities, SendPolicy
from tests.activities.journey_support import channels_for, worker
from tests.payload_keys import session_data_converter
from workflows.preferences_client import PreferencesStore
from workflows.queues import send_task_queue


async def main(address: str, task_queue: str, base_url: str, lease_seconds: str = "") -> None:
    client = await Client.connect(address, data_converter=session_data_converter())
    if not lease_seconds:
        async with worker(client, task_queue, channels_for(base_url)):
            print("worker-ready", flush=True)
            await asyncio.Event().wait()
        return
    sends = NotificationActivities(channels_for(base_url), ledger=PreferencesStore(client, task_queue),
                                   policy=SendPolicy(lease_seconds=float(lease_seconds)))
    async with Worker(client, task_queue=send_task_queue(task_queue, "email"), activities=[sends.send_notification],
                      max_concurrent_activity_task_polls=1):
        print("worker-ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
