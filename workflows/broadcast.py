"""The ``Broadcast`` workflow: fixes a broadcast's audience, then sends to it in paced batches.

One workflow per broadcast (id ``broadcast:<id>``), not one per recipient: each batch is one
activity that sends to up to ``batch_size`` due recipients through the same send path as journeys
(ledger, consent, suppression, quiet hours, caps), so a 10,000-member broadcast costs Temporal a
few hundred actions. The pacing gives each batch ``handled / rate`` of time: the workflow sleeps
only what the batch's own run left of it (a batch that took that long already is followed by the
next at once, with no timer); when no recipient is due yet (local times) it sleeps until the next
one is. The state lives in the customer store (store/broadcasts.py), so the workflow carries only
ids and continues as new before its history grows long.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

BROADCAST_WORKFLOW = "Broadcast"
START_BROADCAST = "start_broadcast"
SEND_BROADCAST_BATCH = "send_broadcast_batch"
#: Batches before the workflow continues as new (each batch is a few history events).
BATCHES_PER_RUN = 200
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
_LONGEST_IDLE = timedelta(hours=1)
#: A worker that dies mid-batch is noticed after this long (each send in the batch heartbeats).
_HEARTBEAT = timedelta(seconds=10)
#: The pause after a batch counts the batch's own time. Broadcasts that ran before paused the
#: whole ``handled / rate`` after every batch (a timer each, whose firing took up to a second on
#: the server), and their histories replay that way.
BATCH_TIME_COUNTS_PATCH = "broadcast-batch-time-counts"


def broadcast_workflow_id(broadcast_id: str) -> str:
    return f"broadcast:{broadcast_id}"


@dataclass(frozen=True)
class BroadcastInput:
    broadcast_id: str
    rate_per_second: float
    batch_size: int = 100
    started: bool = False


@dataclass(frozen=True)
class StartResult:
    """``wait_until``: not yet time (ISO 8601); ``state``: the broadcast's state after the call."""

    state: str
    planned: int = 0
    wait_until: str | None = None


@dataclass(frozen=True)
class BatchInput:
    broadcast_id: str
    limit: int


@dataclass(frozen=True)
class BatchResult:
    handled: int
    remaining: int
    next_due: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class BroadcastOutcome:
    state: str
    batches: int


@workflow.defn(name=BROADCAST_WORKFLOW)
class BroadcastWorkflow:
    def __init__(self) -> None:
        self._woken = False

    @workflow.signal(name="rescheduled")
    def rescheduled(self) -> None:
        """The broadcast's time moved: look at it again now."""
        self._woken = True

    @workflow.run
    async def run(self, params: BroadcastInput) -> BroadcastOutcome:
        while not params.started:
            start: StartResult = await workflow.execute_activity(
                START_BROADCAST, params.broadcast_id, result_type=StartResult,
                start_to_close_timeout=timedelta(minutes=2), retry_policy=_RETRY)
            if start.wait_until is None:
                if start.state != "running":
                    return BroadcastOutcome(start.state, 0)
                params = replace(params, started=True)
                break
            await self._sleep(datetime.fromisoformat(start.wait_until) - workflow.now())
        batches = 0
        while True:
            asked_at = workflow.now()
            result: BatchResult = await workflow.execute_activity(
                SEND_BROADCAST_BATCH, BatchInput(params.broadcast_id, params.batch_size), result_type=BatchResult,
                start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=_HEARTBEAT,
                retry_policy=_RETRY)
            batches += 1
            if result.cancelled:
                return BroadcastOutcome("cancelled", batches)
            if result.remaining == 0:
                return BroadcastOutcome("completed", batches)
            if result.handled:
                pause = timedelta(seconds=result.handled / params.rate_per_second)
                if workflow.patched(BATCH_TIME_COUNTS_PATCH):
                    pause -= workflow.now() - asked_at
                if pause > timedelta(0):
                    await workflow.sleep(pause)
            elif result.next_due is not None:
                await self._sleep(datetime.fromisoformat(result.next_due) - workflow.now())
            else:
                await workflow.sleep(timedelta(seconds=5))  # every due send is being retried: back off
            if batches >= BATCHES_PER_RUN:
                workflow.continue_as_new(params)

    async def _sleep(self, wait: timedelta) -> None:
        self._woken = False
        wait = min(max(wait, timedelta(seconds=1)), _LONGEST_IDLE)
        try:
            await workflow.wait_condition(lambda: self._woken, timeout=wait)
        except TimeoutError:
            pass
