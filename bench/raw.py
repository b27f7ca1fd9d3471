"""The raw ceiling of a notification's work: a workflow that runs one no-op activity.

``python -m bench.raw --address HOST:PORT --task-queue Q`` runs the worker for it as its own OS
process (as the Eventflow worker runs), with pollers and slots well above what the server can
feed, so the server and the SDK are the only limits. The activity returns the wall-clock time it
ran, which the workflow returns: the starter reads start -> activity latency from the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

RAW_WORKFLOW = "BenchRawNotification"
RAW_ACTIVITY = "bench_noop"


@dataclass(frozen=True)
class RawInput:
    """Start input of the raw workflow."""

    label: str


@activity.defn(name=RAW_ACTIVITY)
async def noop(request: RawInput) -> float:
    """Does nothing; returns when it ran (epoch seconds)."""
    return time.time()


@workflow.defn(name=RAW_WORKFLOW)
class RawNotification:
    """Runs the no-op activity once and returns the time it ran."""

    @workflow.run
    async def run(self, request: RawInput) -> float:
        return await workflow.execute_activity(noop, request, start_to_close_timeout=timedelta(seconds=60))


async def serve(address: str, task_queue: str) -> None:
    """Runs the raw worker until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(address)
    worker = Worker(client, task_queue=task_queue, workflows=[RawNotification], activities=[noop],
                    max_concurrent_activities=1000, max_concurrent_workflow_tasks=1000,
                    max_concurrent_workflow_task_polls=10, max_concurrent_activity_task_polls=10)
    async with worker:
        print("ready", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.task_queue))
    sys.stdout.flush()
    # Same reason as eventflow.cli.run: skip interpreter teardown under the SDK's runtime threads.
    os._exit(0)


if __name__ == "__main__":
    main()
