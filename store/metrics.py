"""The customer store's Prometheus metrics: statement latency per kind, errors, and the pool's connections.

Built once per process from its injected registry and registered whether or not a store is
configured, so every series exists (at zero) from the first scrape: dashboards and alerts never
read a series that appears only after the first statement. The pool's gauges are read from the
asyncpg pool at scrape time (`StoreMetrics.watch`), so they are never stale.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from enum import StrEnum
from types import TracebackType

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from store.errors import StoreUnavailableError

# From 1 ms (a primary-key read on a warm connection) to past the default statement timeout (5 s).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StatementKind(StrEnum):
    """What one timed call to the store does: the ``kind`` label, a closed set."""

    RESERVE = "reserve"
    MARK = "mark"
    COMPLETE = "complete"
    RELEASE = "release"
    REPORTED = "reported"
    PROFILE_BATCH = "profile_batch"
    PROFILE_READ = "profile_read"
    TOMBSTONE_BATCH = "tombstone_batch"
    TOMBSTONE_LIFT = "tombstone_lift"
    #: The consumer's journey instances recorded, with its tombstone check, before their starts.
    JOURNEY_ENTRY = "journey_entry"
    CONSENT = "consent"
    REPORT = "report"
    KEYWORD = "keyword"
    FORGET = "forget"
    SEGMENTS = "segments"
    FUNNEL = "funnel"
    #: A customer's inbound WhatsApp message recorded (the 24-hour window opened).
    INBOUND = "inbound"
    #: The send activity reading when a customer last wrote on WhatsApp.
    WINDOW_READ = "window_read"
    DEVICES = "devices"
    DEVICE_MARK = "device_mark"


class PoolState(StrEnum):
    """The ``state`` label of ``eventflow_db_pool_connections``."""

    IN_USE = "in_use"
    IDLE = "idle"
    MAX = "max"


def error_name(error: BaseException) -> str:
    """A bounded name for ``error``: its nearest class defined by asyncpg or Python itself.

    asyncpg's classes follow PostgreSQL's SQLSTATE codes (``QueryCanceledError`` is a statement
    timeout, ``DeadlockDetectedError``...) and are a closed set, as are the builtins
    (``TimeoutError``, ``ConnectionRefusedError``); any other class is named by the first of these
    it derives from, so the ``error`` label cannot grow with our own or a third party's classes.
    """
    for cls in type(error).__mro__:
        module = cls.__module__
        if module == builtins.__name__ or module == "asyncpg" or module.startswith("asyncpg."):
            return cls.__name__
    return "Exception"  # unreachable for an Exception; kept so the result is always a name


class StoreMetrics:
    """The customer store's metrics, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.statement_seconds = Histogram(
            "eventflow_db_statement_seconds",
            "Time of one store call by kind, from asking the pool for a connection to the answer (so waits for "
            "a free connection show here), failed calls included.",
            ["kind"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.errors = Counter(
            "eventflow_db_errors_total",
            "Store calls that raised, by kind and error class (asyncpg's, named after the SQLSTATE, or Python's: "
            "QueryCanceledError is the statement timeout).",
            ["kind", "error"], registry=registry)
        for kind in StatementKind:
            self.statement_seconds.labels(kind=kind.value)
        self._pool: asyncpg.Pool | None = None
        registry.register(_PoolCollector(self))

    def watch(self, pool: asyncpg.Pool) -> None:
        """Reports ``pool``'s connections from now on (one pool per process)."""
        self._pool = pool

    async def renew_connections(self) -> None:
        """After a connection was lost under a call: every pooled connection is replaced at its next use.

        The pool gives connections back without a reset query (store/pool.py), so one that a dropped
        connection left out of step with its server would otherwise be handed out again.
        """
        if self._pool is not None:
            await self._pool.expire_connections()

    def pool_connections(self) -> dict[PoolState, int]:
        """The watched pool's connections by state; all zero before a pool is watched (no store)."""
        pool = self._pool
        if pool is None:
            return {state: 0 for state in PoolState}
        idle = pool.get_idle_size()
        return {PoolState.IN_USE: pool.get_size() - idle, PoolState.IDLE: idle, PoolState.MAX: pool.get_max_size()}

    def timed(self, kind: StatementKind) -> StatementTimer:
        """Times one call of ``kind`` (``async with``) and counts it as an error if it raises."""
        return StatementTimer(self, kind)


class StatementTimer:
    """``async with`` around one store call: observes its time and names its error, if any."""

    __slots__ = ("_kind", "_metrics", "_started")

    def __init__(self, metrics: StoreMetrics | None, kind: StatementKind) -> None:
        self._metrics = metrics
        self._kind = kind
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        metrics = self._metrics
        # A cancelled call (the activity or the process stopping) is neither a latency nor the database failing.
        if exc is not None and not isinstance(exc, Exception):
            return
        if metrics is not None:
            metrics.statement_seconds.labels(kind=self._kind.value).observe(time.perf_counter() - self._started)
            if exc is not None:
                metrics.errors.labels(kind=self._kind.value, error=error_name(exc)).inc()
        if exc is not None and is_unavailable(exc):
            if metrics is not None and isinstance(exc, _CONNECTION_LOST):
                await metrics.renew_connections()
            raise StoreUnavailableError(self._kind.value, error_name(exc)) from exc


#: Driver errors that mean a connection was lost or left unusable: the pool's connections are renewed
#: after one. A statement timeout, a conflict or a full server leaves the connections as they are.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is one)
    asyncpg.InterfaceError,  # a connection closed under the call
    asyncpg.InternalClientError,  # a connection a dropped one left waiting for its old statement's end
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

#: Driver errors that mean "the database could not answer now", not "the statement is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *_CONNECTION_LOST,
    asyncpg.QueryCanceledError,  # the statement timeout
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing to answer (transient) rather than a wrong statement."""
    return isinstance(exc, _UNAVAILABLE)


def timed(metrics: StoreMetrics | None, kind: StatementKind) -> StatementTimer:
    """`StoreMetrics.timed`, or a timer that records nothing when there are no metrics."""
    return StatementTimer(metrics, kind)


class _PoolCollector(Collector):
    """``eventflow_db_pool_connections``, read from the pool at each scrape."""

    def __init__(self, metrics: StoreMetrics) -> None:
        self._metrics = metrics

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "eventflow_db_pool_connections",
            "The customer store's pool connections by state: in_use (lent to a call), idle (open, free), max "
            "(the pool's bound, EVENTFLOW_DATABASE_POOL_MAX_SIZE; 0 without a store).",
            labels=["state"])

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for state, count in self._metrics.pool_connections().items():
            family.add_metric([state.value], count)
        yield family
