"""A token bucket per provider, so a burst of sends inside one worker stays under the provider's limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``rate_per_second`` acquisitions on average, with bursts up to ``burst``.

    Waiters are served in arrival order (one lock), so a burst is spread out instead of
    tripping the provider's 429s. Limits are per worker process: size them as the provider's
    limit divided by the number of worker replicas.
    """

    def __init__(self, rate_per_second: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_second <= 0 or burst <= 0:
            raise ValueError("rate_per_second and burst must be > 0")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Takes one token, sleeping until one is available; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_second)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate_per_second
                waited += delay
                await asyncio.sleep(delay)
