"""`store.customers.Batcher`: calls made together go together; with a bound, calls wait for room."""

from __future__ import annotations

import asyncio

import pytest

from store.customers import Batcher


class _Recorder:
    """A flush that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [n * 10 for n in batch]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_unbounded_batcher_starts_a_flush_per_turn_of_the_loop() -> None:
    flush = _Recorder()
    batcher = Batcher[int, int](flush)
    first = [asyncio.ensure_future(batcher(n)) for n in (1, 2)]
    await _settle()
    second = [asyncio.ensure_future(batcher(n)) for n in (3, 4)]
    await _settle()
    assert flush.batches == [[1, 2], [3, 4]]
    assert flush.most_running == 2
    flush.release.set()
    assert await asyncio.gather(*first, *second) == [10, 20, 30, 40]


async def test_bounded_batcher_holds_calls_until_the_running_flush_ends_then_sends_them_together() -> None:
    flush = _Recorder()
    batcher = Batcher[int, int](flush, max_flushes=1)
    first = asyncio.ensure_future(batcher(1))
    await _settle()
    waiting = []
    for n in (2, 3, 4):
        waiting.append(asyncio.ensure_future(batcher(n)))
        await _settle()  # each on its own turn: unbounded, each would be a batch of one
    assert flush.batches == [[1]]
    flush.release.set()
    assert await asyncio.gather(first, *waiting) == [10, 20, 30, 40]
    assert flush.batches == [[1], [2, 3, 4]]
    assert flush.most_running == 1


async def test_a_failed_flush_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls: list[list[int]] = []

    async def flaky(batch: list[int]) -> list[int]:
        calls.append(batch)
        await asyncio.sleep(0)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return batch

    batcher = Batcher[int, int](flaky, max_flushes=1)
    failing = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0)
    later = asyncio.ensure_future(batcher(2))
    with pytest.raises(RuntimeError, match="database went away"):
        await failing
    assert await later == 2
    assert calls == [[1], [2]]


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_flushes"):
        Batcher[int, int](_Recorder(), max_flushes=0)
