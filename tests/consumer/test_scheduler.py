"""The per-key scheduler and the offset tracker without servers: order, bounds, released slots, stalls."""

from __future__ import annotations

import asyncio

from consumer.ledger import PartitionLedger, format_metadata, parse_metadata
from consumer.offsets import OffsetTracker
from consumer.scheduler import REFILL_DIVISOR, KeyScheduler

P0 = ("events", 0)


async def test_records_of_one_key_run_in_order_even_when_the_first_is_slower() -> None:
    scheduler = KeyScheduler(10)
    order: list[str] = []
    first_may_finish = asyncio.Event()

    async def first() -> None:
        await first_may_finish.wait()
        order.append("first")

    async def second() -> None:
        order.append("second")

    scheduler.submit(b"k", P0, first)
    done = scheduler.submit(b"k", P0, second)
    await asyncio.sleep(0)
    assert order == []
    first_may_finish.set()
    await done
    assert order == ["first", "second"]


async def test_different_keys_run_concurrently() -> None:
    scheduler = KeyScheduler(10)
    started: set[str] = set()
    both_started = asyncio.Event()

    def work(name: str) -> asyncio.Task[None]:
        async def run() -> None:
            started.add(name)
            if len(started) == 2:
                both_started.set()
            await both_started.wait()
        return scheduler.submit(name.encode(), P0, run)

    await asyncio.wait_for(asyncio.gather(work("a"), work("b")), 5)
    assert scheduler.in_flight == 0


async def test_a_failing_record_releases_its_slot_and_its_key_goes_on() -> None:
    scheduler = KeyScheduler(2)
    ran: list[str] = []

    async def boom() -> None:
        raise RuntimeError("bug")

    async def after() -> None:
        ran.append("after")

    failed = scheduler.submit(b"k", P0, boom)
    later = scheduler.submit(b"k", P0, after)
    await asyncio.gather(failed, later, return_exceptions=True)
    assert ran == ["after"]
    assert scheduler.in_flight == 0 and scheduler.free == 2
    assert scheduler.tasks() == []


async def test_a_small_bound_pauses_at_the_bound_and_resumes_with_the_first_free_slot() -> None:
    scheduler = KeyScheduler(4)
    gates = [asyncio.Event() for _ in range(4)]
    tasks = [scheduler.submit(str(i).encode(), P0, gate.wait) for i, gate in enumerate(gates)]
    assert scheduler.should_pause(retrying=0)
    gates[0].set()
    await tasks[0]
    assert scheduler.in_flight == 3 and not scheduler.should_pause(retrying=0)
    assert scheduler.should_pause(retrying=1), "a retry in progress pauses too"
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert not scheduler.should_pause(retrying=0)


async def test_a_large_bound_resumes_once_a_sixteenth_of_its_slots_is_free() -> None:
    bound = 64
    scheduler = KeyScheduler(bound)
    refill = bound // REFILL_DIVISOR
    gates = [asyncio.Event() for _ in range(bound)]
    tasks = [scheduler.submit(str(i).encode(), P0, gate.wait) for i, gate in enumerate(gates)]
    decisions = []
    for index in range(refill):
        decisions.append(scheduler.should_pause(retrying=0))
        gates[index].set()
        await tasks[index]
    decisions.append(scheduler.should_pause(retrying=0))
    # Paused from the bound until the refill's slots are free, then the whole refill is taken at once.
    assert decisions == [True] * refill + [False]
    assert scheduler.free == refill
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)


async def test_drain_cancels_what_does_not_finish_within_the_grace_period() -> None:
    scheduler = KeyScheduler(4)
    never = asyncio.Event()
    scheduler.submit(b"a", P0, never.wait)
    scheduler.submit(b"b", ("events", 1), never.wait)
    assert await scheduler.drain([P0], grace_seconds=0.01) == 1
    assert len(scheduler.tasks()) == 1
    scheduler.cancel([("events", 1)])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert scheduler.in_flight == 0


class _Gate:
    """Commit metadata that is not ready until opened."""

    def __init__(self) -> None:
        self.open = False

    def commit_metadata(self, partition: tuple[str, int], position: int) -> str | None:
        return f"m{position}" if self.open else None


def test_offsets_commit_the_watermark_with_metadata_once_ready() -> None:
    gate = _Gate()
    tracker = OffsetTracker(gate)
    tracker.assign([P0])
    for offset in (10, 11, 12):
        tracker.add(P0, offset)
    tracker.done(P0, 11)
    assert tracker.to_commit() == []
    gate.open = True
    [first] = tracker.to_commit()
    assert (first.offset, first.metadata) == (10, "m10")
    tracker.done(P0, 10)
    [second] = tracker.to_commit()
    assert second.offset == 12
    assert tracker.to_commit() == []
    tracker.failed([second])
    assert [tp.offset for tp in tracker.to_commit()] == [12]


def test_a_partition_that_does_not_move_is_reported_as_stalled() -> None:
    tracker = OffsetTracker()
    tracker.assign([P0, ("events", 1)])
    tracker.add(P0, 3)
    tracker.skip(("events", 1), 8)
    assert tracker.stalled(now=100.0, after_seconds=30) == []
    assert tracker.stalled(now=120.0, after_seconds=30) == []
    [stalled] = tracker.stalled(now=131.0, after_seconds=30)
    assert (stalled.topic, stalled.partition, stalled.position, stalled.in_flight) == ("events", 0, 3, 1)
    tracker.done(P0, 3)
    assert tracker.stalled(now=200.0, after_seconds=30) == []


def test_commit_metadata_points_below_every_dead_letter_still_needed() -> None:
    ledger = PartitionLedger(dlq_partition=2, floor=50)
    ledger.written.update({5: 40, 9: 47})
    assert parse_metadata(ledger.commit_metadata(5)) == (2, 40)
    assert parse_metadata(ledger.commit_metadata(6)) == (2, 47)
    assert ledger.written == {9: 47}
    assert parse_metadata(ledger.commit_metadata(10)) == (2, 50)
    assert parse_metadata(format_metadata(1, 7)) == (1, 7)
    assert parse_metadata("something else") is None
