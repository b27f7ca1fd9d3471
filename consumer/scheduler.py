"""Per-key ordering with a bound on work in flight.

Records with the same key run one after another, in submission (offset) order; different keys
run concurrently. At most ``max_in_flight`` records are in flight: the poll loop asks
`KeyScheduler.should_pause` and fetches nothing at the bound (or while a transient failure is
being retried), pausing its partitions if that lasts. From the bound it takes records again once a
sixteenth of the slots is free (`REFILL_DIVISOR`). The in-flight slot of a record is released
whatever its work does, so a failure can never shrink the capacity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
T = TypeVar("T")
#: From the bound, records are taken again once ``max_in_flight // REFILL_DIVISOR`` slots are free
#: (at least one). The records of one hand-off share one profile write and one journey-entry write
#: to the store: taken as each slot freed, one or two at a time, a routed event cost 1.2 round trips
#: to PostgreSQL instead of 0.12, and the consumer a fifth more CPU, at the bridge's bound of 256.
#: The bridge's starts wait on Temporal for about a second there, so the slots left empty for the
#: refill (at most a sixteenth, briefly) do not lower its rate.
REFILL_DIVISOR = 16


class KeyScheduler:
    """Runs one coroutine per record, ordered per key, bounded in total."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._refill = max(1, max_in_flight // REFILL_DIVISOR)
        self._in_flight = 0
        self._tails: dict[bytes, asyncio.Task[Any]] = {}
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[Any]]] = {}
        self._capacity = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Records submitted and not yet finished."""
        return self._in_flight

    @property
    def free(self) -> int:
        """How many more records may be submitted before the bound."""
        return max(0, self.max_in_flight - self._in_flight)

    def should_pause(self, retrying: int) -> bool:
        """Whether nothing more should be fetched now: while a retry is in progress, or with fewer than
        the refill's slots free (so from the bound until a sixteenth of them is free).

        The loop keeps what it prefetched while it waits (no pause, no refetch), so the wait costs
        only the slots it leaves empty."""
        return retrying > 0 or self.free < self._refill

    def submit(self, key: bytes, partition: TopicPartitionKey, work: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Schedules ``work`` after every earlier record of ``key``; the task ends with its result."""
        previous = self._tails.get(key)
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(previous, work))
        self._tails[key] = task
        self._tasks.setdefault(partition, set()).add(task)

        def finished(done: asyncio.Task[T]) -> None:
            if self._tails.get(key) is done:
                del self._tails[key]
            tasks = self._tasks.get(partition)
            if tasks is not None:
                tasks.discard(done)
                if not tasks:
                    del self._tasks[partition]

        task.add_done_callback(finished)
        return task

    async def _run(self, previous: asyncio.Task[Any] | None, work: Callable[[], Awaitable[T]]) -> T:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            return await work()
        finally:
            self._in_flight -= 1
            self.wake()

    def wake(self) -> None:
        """Lets a loop waiting in `wait_for_capacity` re-check (capacity freed, a retry settled)."""
        self._capacity.set()

    async def wait_for_capacity(self, timeout_seconds: float) -> None:
        """Returns when work finished or a retry settled, or after the timeout."""
        self._capacity.clear()
        try:
            await asyncio.wait_for(self._capacity.wait(), timeout_seconds)
        except TimeoutError:
            pass

    def tasks(self, partitions: Iterable[TopicPartitionKey] | None = None) -> list[asyncio.Task[Any]]:
        """The unfinished tasks of ``partitions`` (all partitions by default)."""
        keys = list(self._tasks) if partitions is None else partitions
        return [t for k in keys for t in self._tasks.get(k, ())]

    async def drain(self, partitions: Iterable[TopicPartitionKey] | None, grace_seconds: float) -> int:
        """Waits up to ``grace_seconds`` for the partitions' work, then cancels the rest; returns how many."""
        tasks = self.tasks(partitions)
        if not tasks:
            return 0
        _, late = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        return len(late)

    def cancel(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Cancels the partitions' work at once (partitions lost to another member)."""
        for task in self.tasks(partitions):
            task.cancel()
