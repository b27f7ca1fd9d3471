"""The raw ceiling of a notification's work: a workflow that runs one no-op activity.

``python -m bench.raw --address HOST:PORT --task-queue Q --record FILE`` runs the worker for it as
its own OS process (as the Eventflow worker runs), with pollers and slots well above what the server
can feed, so the server and the SDK are the only limits. The activity returns the wall-clock time it
ran (the starter reads start -> activity latency from the result) and the worker appends
``<label> <epoch seconds>`` lines to FILE, so a throughput run needs no result call per workflow
(which would load the server with work the full path does not do).
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
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

RAW_WORKFLOW = "BenchRawNotification"
RAW_ACTIVITY = "bench_noop"


@dataclass(frozen=True)
class RawInput:
    """Start input of the raw workflow."""

    label: str


class NoopActivities:
    """The no-op activity, remembering when each run happened."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    @activity.defn(name=RAW_ACTIVITY)
    async def noop(self, request: RawInput) -> float:
        """Does nothing; returns when it ran (epoch seconds)."""
        now = time.time()
        self.ran.append(f"{request.label} {now!r}\n")
        return now


@workflow.defn(name=RAW_WORKFLOW)
class RawNotification:
    """Runs the no-op activity once and returns the time it ran."""

    @workflow.run
    async def run(self, request: RawInput) -> float:
        return await workflow.execute_activity(RAW_ACTIVITY, request, result_type=float,
                                               start_to_close_timeout=timedelta(seconds=60))


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a") as file:
        file.writelines(lines)


async def _record(activities: NoopActivities, path: Path, stop: asyncio.Event) -> None:
    written = 0
    while True:
        stopping = stop.is_set()
        lines = activities.ran[written:]
        if lines:
            await asyncio.to_thread(_append, path, lines)
            written += len(lines)
        if stopping:
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.1)
        except TimeoutError:
            pass


async def serve(address: str, task_queue: str, record: Path) -> None:
    """Runs the raw worker until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(address)
    activities = NoopActivities()
    # The best raw configuration: no sandbox (it would re-import this module for every workflow).
    worker = Worker(client, task_queue=task_queue, workflows=[RawNotification], activities=[activities.noop],
                    workflow_runner=UnsandboxedWorkflowRunner(),
                    max_concurrent_activities=1000, max_concurrent_workflow_tasks=1000,
                    max_concurrent_workflow_task_polls=10, max_concurrent_activity_task_polls=10)
    async with worker:
        await _record(activities, record, stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--record", type=Path, required=True, help="file the activity times are appended to")
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.task_queue, args.record))
    sys.stdout.flush()
    # Same reason as eventflow.cli.run: skip interpreter teardown under the SDK's runtime threads.
    os._exit(0)


if __name__ == "__main__":
    main()
