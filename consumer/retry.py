"""Retrying transient failures with capped, jittered back-off, visibly (metrics, readiness, stall reasons).

Classification: Kafka client errors, the registry or Temporal being unreachable, a dead-letter
produce that failed or timed out, and OS-level connection errors are infrastructure failures,
retried until they pass. Everything else is the record's fault (or a bug) and is for the caller
to dead-letter.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from confluent_kafka import KafkaException

from consumer.dead_letter import DeadLetterPublishError
from consumer.dispatch import TransientTemporalError
from consumer.metrics import ConsumerMetrics
from consumer.record import SourceRecord
from events.errors import RegistryUnavailableError
from store.errors import StoreUnavailableError

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: Exceptions that mean "the infrastructure failed, not the record": retried, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientTemporalError, RegistryUnavailableError, DeadLetterPublishError, KafkaException, BufferError, OSError,
    StoreUnavailableError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter for transient failures."""

    initial_seconds: float = 0.2
    maximum_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return random.uniform(0.5, 1.0) * min(self.maximum_seconds, self.initial_seconds * 2 ** (attempt - 1))


#: The consumer's default backoff (frozen, so one shared instance is safe as a parameter default).
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class RetryState:
    """One record currently waiting out a transient failure."""

    operation: str
    record: SourceRecord
    error: str
    since: float
    attempts: int

    def describe(self, now: float) -> str:
        """``retrying <operation> for <position> for Ns (N attempts): <error>``."""
        return (f"retrying {self.operation} for {self.record.position} for {now - self.since:.0f}s "
                f"({self.attempts} attempts): {self.error}")


class Retrier:
    """Runs calls, retrying transient failures; knows which records are retrying and why."""

    def __init__(self, policy: RetryPolicy, metrics: ConsumerMetrics, *,
                 on_settled: Callable[[], None] | None = None) -> None:
        self._policy = policy
        self._metrics = metrics
        self._on_settled = on_settled
        self._active: dict[int, RetryState] = {}
        self._ids = itertools.count()

    @property
    def retrying(self) -> int:
        """How many records are between attempts right now."""
        return len(self._active)

    def states(self) -> list[RetryState]:
        """The records retrying now, oldest first."""
        return sorted(self._active.values(), key=lambda s: s.since)

    def reason_for(self, topic: str, partition: int) -> str | None:
        """Why a record of this partition is not done yet, if it is retrying."""
        now = time.monotonic()
        for state in self.states():
            if state.record.topic == topic and state.record.partition == partition:
                return state.describe(now)
        return None

    async def call(self, operation: str, record: SourceRecord, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` until it does not raise a transient error; other errors propagate."""
        token = next(self._ids)
        attempt = 0
        started = time.monotonic()
        try:
            while True:
                try:
                    return await call()
                except TRANSIENT_ERRORS as exc:
                    attempt += 1
                    error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    self._active[token] = RetryState(operation, record, error, started, attempt)
                    self._metrics.retries.labels(operation).inc()
                    self._metrics.retrying.labels(operation).inc()
                    delay = self._policy.delay(attempt)
                    log.warning("transient_failure_retrying", operation=operation, record=record.position,
                                attempt=attempt, delay_seconds=round(delay, 3), error=error)
                    try:
                        await asyncio.sleep(delay)
                    finally:
                        self._metrics.retrying.labels(operation).dec()
        finally:
            if self._active.pop(token, None) is not None and self._on_settled is not None:
                self._on_settled()
