"""The ``Broadcast`` workflow against scripted activities, for its workflow-level tests and recorded histories.

The workflow's decisions depend only on what its two activities answer, so a script of answers
(the audience fixed, then batches handled with what remains) drives every path of it on the
time-skipping test server without a customer store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from workflows.broadcast import (
    BROADCAST_WORKFLOW,
    SEND_BROADCAST_BATCH,
    START_BROADCAST,
    BatchInput,
    BatchResult,
    BroadcastInput,
    BroadcastOutcome,
    BroadcastWorkflow,
    StartResult,
    broadcast_workflow_id,
)


@dataclass
class ScriptedBroadcast:
    """Activities answering from a script: ``batches`` in order, each after ``batch_seconds`` of work."""

    batches: Sequence[BatchResult]
    batch_seconds: float = 0.0
    asked: list[BatchInput] = field(default_factory=list)

    @activity.defn(name=START_BROADCAST)
    async def start(self, broadcast_id: str) -> StartResult:
        return StartResult("running", planned=sum(b.handled for b in self.batches))

    @activity.defn(name=SEND_BROADCAST_BATCH)
    async def send_batch(self, batch: BatchInput) -> BatchResult:
        self.asked.append(batch)
        if self.batch_seconds:
            await asyncio.sleep(self.batch_seconds)
        return self.batches[len(self.asked) - 1]


async def run_broadcast(client: Client, script: ScriptedBroadcast, *, rate_per_second: float,
                        batch_size: int = 2) -> tuple[BroadcastOutcome, WorkflowHistory]:
    """Runs one broadcast to its end on ``client``'s server; returns its outcome and history."""
    queue = f"broadcast-{uuid.uuid4().hex[:8]}"
    broadcast_id = f"b-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[BroadcastWorkflow],
                      activities=[script.start, script.send_batch]):
        handle = await client.start_workflow(
            BROADCAST_WORKFLOW, BroadcastInput(broadcast_id, rate_per_second, batch_size),
            id=broadcast_workflow_id(broadcast_id), task_queue=queue, result_type=BroadcastOutcome)
        outcome = await handle.result()
        return outcome, await handle.fetch_history()


def three_batches() -> ScriptedBroadcast:
    """Five recipients in batches of two: two batches with more to come, then the last."""
    return ScriptedBroadcast([BatchResult(2, 3), BatchResult(2, 1), BatchResult(1, 0)])
