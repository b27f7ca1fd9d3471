"""The store's metrics after real statements on the real server: latency per kind, errors, the pool."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from activities.ledger import Completion, ReserveRequest
from activities.outcomes import DeliveryOutcome, DeliveryReport, LedgerState, ReserveDecision
from events.model import Customer, CustomerEvent
from store.customers import CustomerBatcher, CustomerStore
from store.errors import StoreUnavailableError
from store.feedback import StoreFeedback
from store.forgetting import forget
from store.ledger import PostgresLedger
from store.metrics import StatementKind, StoreMetrics, error_name
from store.pool import create_pool
from workflows.profile import ProfileUpdate
from workflows.suppression import ContactKeyword, DeliveryFeedback, KeywordAction


def _count(registry: CollectorRegistry, kind: StatementKind) -> float:
    value = registry.get_sample_value("eventflow_db_statement_seconds_count", {"kind": kind.value})
    assert value is not None, f"no histogram child for {kind}"
    return value


def _errors(registry: CollectorRegistry, kind: StatementKind, error: str) -> float:
    return registry.get_sample_value("eventflow_db_errors_total", {"kind": kind.value, "error": error}) or 0.0


def _pool(registry: CollectorRegistry) -> dict[str, float]:
    return {state: registry.get_sample_value("eventflow_db_pool_connections", {"state": state}) or 0.0
            for state in ("in_use", "idle", "max")}


def _request(key: str, customer: str, attempt: int = 1) -> ReserveRequest:
    return ReserveRequest(idempotency_key=key, customer_id=customer, channel="email", attempt=attempt,
                          lease_seconds=30.0, now_epoch_seconds=1.0)


def test_every_series_is_exposed_at_zero_before_any_statement() -> None:
    registry = CollectorRegistry()
    StoreMetrics(registry)
    for kind in StatementKind:
        assert _count(registry, kind) == 0
    assert _pool(registry) == {"in_use": 0, "idle": 0, "max": 0}
    text = generate_latest(registry).decode()
    assert "# TYPE eventflow_db_errors_total counter" in text


async def test_each_ledger_call_is_timed_under_its_kind(store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    ledger = PostgresLedger(store_pool, StoreMetrics(registry))
    customer, key = f"c-{uuid.uuid4().hex[:8]}", f"wf-{uuid.uuid4().hex[:8]}/s"
    assert (await ledger.reserve(_request(key, customer))).decision is ReserveDecision.SEND
    assert await ledger.mark_calling(key, 1)
    await ledger.complete(Completion(key, customer, "email", LedgerState.DELIVERED, "sendgrid", "m-1", attempt=1))
    await ledger.reported(key)
    other = f"wf-{uuid.uuid4().hex[:8]}/s"
    await ledger.reserve(_request(other, customer))
    await ledger.release(other, 1)
    assert {kind: _count(registry, kind) for kind in (StatementKind.RESERVE, StatementKind.MARK,
                                                      StatementKind.COMPLETE, StatementKind.RELEASE,
                                                      StatementKind.REPORTED)} == {
        StatementKind.RESERVE: 2, StatementKind.MARK: 1, StatementKind.COMPLETE: 1, StatementKind.RELEASE: 1,
        StatementKind.REPORTED: 1}
    summed = registry.get_sample_value("eventflow_db_statement_seconds_sum", {"kind": "reserve"})
    assert summed is not None and summed > 0
    assert _count(registry, StatementKind.PROFILE_BATCH) == 0, "kinds are not mixed up"


async def test_customer_calls_are_timed_per_batch_not_per_record(store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    store = CustomerStore(store_pool, metrics=metrics)
    batcher = CustomerBatcher(store)
    ids = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    # Calls made in one turn of the event loop share one statement.
    await asyncio.gather(*(batcher.write_profile(customer, ProfileUpdate(f"e-{customer}", "2026-01-01T00:00:00Z",
                                                                          email=f"{customer}@example.com"))
                           for customer in ids))
    await asyncio.gather(*(batcher.forgotten(customer) for customer in ids))
    assert await batcher.lift(ids[0], "2026-01-02T00:00:00Z")
    assert (await store.contact_points(ids[0])).email == f"{ids[0]}@example.com"
    await batcher.change_subscription(CustomerEvent(
        "e-sub", "SubscriptionChanged", datetime.now(UTC).isoformat(), Customer(ids[0]),
        {"channel": "email", "subscribed": False}))
    assert {kind: _count(registry, kind) for kind in (StatementKind.PROFILE_BATCH, StatementKind.TOMBSTONE_BATCH,
                                                      StatementKind.TOMBSTONE_LIFT, StatementKind.PROFILE_READ,
                                                      StatementKind.CONSENT)} == {
        StatementKind.PROFILE_BATCH: 1, StatementKind.TOMBSTONE_BATCH: 1, StatementKind.TOMBSTONE_LIFT: 1,
        StatementKind.PROFILE_READ: 1, StatementKind.CONSENT: 1}
    await forget(store_pool, ids[1], metrics=metrics)
    assert _count(registry, StatementKind.FORGET) == 1


async def test_feedback_reports_and_keywords_are_timed(store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    feedback = StoreFeedback(store_pool, StoreMetrics(registry))
    key, now = f"wf-{uuid.uuid4().hex[:8]}/s", datetime.now(UTC).isoformat()
    assert await feedback.report(DeliveryFeedback(DeliveryReport(
        idempotency_key=key, customer_id="c-1", channel="email", provider="sendgrid",
        outcome=DeliveryOutcome.DELIVERED, at=now, report_id=f"r-{key}")))
    assert await feedback.keyword(ContactKeyword("sms", uuid.uuid4().hex, KeywordAction.OPT_OUT, now, f"k-{key}"))
    assert (_count(registry, StatementKind.REPORT), _count(registry, StatementKind.KEYWORD)) == (1, 1)


async def test_a_statement_timeout_is_counted_as_an_error_of_its_kind(store_dsn: str,
                                                                      store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    pool = await create_pool(store_dsn, min_size=1, max_size=1, statement_timeout_seconds=0.1,
                             command_timeout_seconds=10.0)
    ledger, customer = PostgresLedger(pool, metrics), f"c-{uuid.uuid4().hex[:8]}"
    try:
        # Another session holds the customer's advisory lock, so the reserve waits until the server cancels it.
        async with store_pool.acquire() as holder, holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", customer)
            # The server's cancel is the store being unable to answer now: a transient, typed error.
            with pytest.raises(StoreUnavailableError) as raised:
                await ledger.reserve(_request(f"wf-{customer}/s", customer))
            assert isinstance(raised.value.__cause__, asyncpg.QueryCanceledError)
            assert raised.value.kind == StatementKind.RESERVE.value
        assert _errors(registry, StatementKind.RESERVE, "QueryCanceledError") == 1
        assert _count(registry, StatementKind.RESERVE) == 1, "a failed call's time is observed too"
        await ledger.reserve(_request(f"wf-{customer}/s", customer))
        assert _errors(registry, StatementKind.RESERVE, "QueryCanceledError") == 1
    finally:
        await pool.close()


async def test_a_cancelled_call_is_neither_timed_nor_an_error(store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    ledger, customer = PostgresLedger(store_pool, StoreMetrics(registry)), f"c-{uuid.uuid4().hex[:8]}"
    async with store_pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", customer)
        waiting = asyncio.ensure_future(ledger.reserve(_request(f"wf-{customer}/s", customer)))
        # Cancelled while it waits for the lock: the session's pg_stat_activity shows it waiting first.
        await _until_waiting_on_lock(store_pool)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert _count(registry, StatementKind.RESERVE) == 0
    assert not [line for line in generate_latest(registry).decode().splitlines()
                if line.startswith("eventflow_db_errors_total{")]


async def _until_waiting_on_lock(pool: asyncpg.Pool) -> None:
    while not await pool.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'"):
        await asyncio.sleep(0.01)


async def test_the_pool_gauges_read_the_pool_at_scrape_time(store_dsn: str) -> None:
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    pool = await create_pool(store_dsn, min_size=1, max_size=3)
    metrics.watch(pool)
    try:
        assert _pool(registry) == {"in_use": 0, "idle": 1, "max": 3}
        first, second = await pool.acquire(), await pool.acquire()
        assert _pool(registry) == {"in_use": 2, "idle": 0, "max": 3}
        await pool.release(first)
        assert _pool(registry) == {"in_use": 1, "idle": 1, "max": 3}
        await pool.release(second)
    finally:
        await pool.close()


def test_error_names_are_bounded_to_asyncpgs_and_pythons_classes() -> None:
    class OurOwnError(ConnectionResetError):
        pass

    assert error_name(asyncpg.QueryCanceledError("x")) == "QueryCanceledError"
    assert error_name(TimeoutError()) == "TimeoutError"
    assert error_name(OurOwnError()) == "ConnectionResetError"


async def test_a_connection_out_of_step_with_its_server_is_unavailable_and_no_connection_is_reused(
        store_dsn: str) -> None:
    # What a connection dropped mid-statement can leave (the bench's 30 s outage dead-lettered an event
    # with it): the driver's protocol still waits for the old statement's end, and the next statement on
    # that connection fails with InternalClientError. It is the database being unavailable (retried, not
    # dead-lettered), and the pool's connections are renewed so the retry does not meet the same one.
    pool = await create_pool(store_dsn, min_size=1, max_size=1)
    metrics = StoreMetrics(CollectorRegistry())
    metrics.watch(pool)
    try:
        before = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(StoreUnavailableError) as raised:
            async with metrics.timed(StatementKind.TOMBSTONE_BATCH):
                await pool.fetchval("SELECT 1")
                raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        after = await pool.fetchval("SELECT pg_backend_pid()")
    finally:
        await pool.close()

    assert "InternalClientError" in str(raised.value)
    assert after != before
