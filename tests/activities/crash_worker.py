"""A journey worker in its own process, so a test can kill it mid-send.

Usage: ``python -m tests.activities.crash_worker <temporal address> <task queue> <provider base url>``.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client

from tests.activities.journey_support import channels_for, worker


async def main(address: str, task_queue: str, base_url: str) -> None:
    client = await Client.connect(address)
    async with worker(client, task_queue, channels_for(base_url)):
        print("worker-ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
