"""The per-provider token bucket."""

from __future__ import annotations

import asyncio
import time

from activities.ratelimit import TokenBucket


async def test_burst_passes_then_rate_applies() -> None:
    bucket = TokenBucket(rate_per_second=20, burst=5)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(15)))
    elapsed = time.monotonic() - started
    # 5 free tokens, then 10 more at 20/s: about half a second, never a burst of 15 at once.
    assert 0.45 <= elapsed < 1.5


async def test_waits_are_reported() -> None:
    bucket = TokenBucket(rate_per_second=10, burst=1)
    assert await bucket.acquire() == 0.0
    assert await bucket.acquire() > 0.05
