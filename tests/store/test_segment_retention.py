"""``customer_events`` retention on the real PostgreSQL: old events go, what segments read stays the same.

Pruning deletes a customer's events older than the retention except the newest of each type, in
chunks of customers, by one process at a time (the segment refresher's lock); a count window longer
than the retention is refused by validation, and a followed one is kept whole anyway.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from consumer.segment_triggers import SegmentRefresher
from journeys._yaml import load_located
from journeys.segments import RETENTION_VARIABLE, Attributes, SegmentError, load_segments, parse_segment
from store import segments as store_segments
from store.pool import create_pool
from store.segments import ObservedEvent, SegmentStore
from tests.harness import eventually

NOW = datetime(2027, 3, 1, 12, tzinfo=UTC)
RETENTION = timedelta(days=90)


def segment(text: str):
    parsed, problems = parse_segment("s.yaml", load_located(text), Attributes(), None)
    assert parsed is not None, problems
    return parsed


#: One segment of each kind that reads events; none counts further back than the retention.
SEGMENTS = [
    segment("id: counted\nversion: 1\nmatch: {event: PurchaseCompleted, count: {at_least: 2}, within: 90d}\n"),
    segment("id: recent\nversion: 1\nmatch: {event: PurchaseCompleted, within: 450d}\n"),
    segment("id: lapsed\nversion: 1\nmatch: {event: PurchaseCompleted, not_within: 200d}\n"),
    segment("id: big_last\nversion: 1\nmatch: {event: PurchaseCompleted, last: {field: payload.total, "
            "greater_than: 100}}\n"),
    segment("id: checked_out\nversion: 1\nmatch: {event: CheckoutStarted, within: 1000d}\n"),
]


def event(customer: str, days_ago: float, total: float = 10.0, kind: str = "PurchaseCompleted") -> ObservedEvent:
    return ObservedEvent(uuid.uuid4().hex, customer, kind, NOW - timedelta(days=days_ago), {"payload.total": total})


async def rows(pool: asyncpg.Pool, customers: list[str]) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = {customer: [] for customer in customers}
    for row in await pool.fetch("SELECT customer_id, event_type, occurred_at FROM eventflow.customer_events"
                                " WHERE customer_id = ANY($1) ORDER BY occurred_at", customers):
        found[row["customer_id"]].append((row["event_type"], (NOW - row["occurred_at"]) / timedelta(days=1)))
    return found


async def test_pruning_deletes_old_events_but_each_types_newest_and_changes_no_membership(
        store_pool: asyncpg.Pool) -> None:
    store = SegmentStore(store_pool, SEGMENTS)
    ann, ben, cat = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("ann", "ben", "cat"))
    await store.observe([
        event(ann, 500, total=500.0), event(ann, 300), event(ann, 60), event(ann, 10),  # recent buyer
        event(ben, 700), event(ben, 400, total=250.0),  # lapsed: only old purchases, the last a big one
        event(ben, 800, kind="CheckoutStarted"),
        event(cat, 95), event(cat, 85),  # the one at 95 days is outside the count window anyway
    ], now=NOW)
    customers = [ann, ben, cat]
    before = {s.id: (await store.preview(s, NOW)).sample for s in SEGMENTS}

    # Chunks of one customer: several statements, each its own transaction.
    pruned = await store.prune_events(RETENTION, NOW, chunk=1)

    assert pruned == 4
    assert await rows(store_pool, customers) == {
        ann: [("PurchaseCompleted", 60), ("PurchaseCompleted", 10)],
        ben: [("CheckoutStarted", 800), ("PurchaseCompleted", 400)],  # each type's newest stays, however old
        cat: [("PurchaseCompleted", 85)],
    }
    after = {s.id: (await store.preview(s, NOW)).sample for s in SEGMENTS}
    assert after == before
    assert ben in after["lapsed"] and ben in after["big_last"] and ben in after["recent"]
    assert ann in after["counted"] and cat not in after["counted"]
    assert await store.prune_events(RETENTION, NOW) == 0  # nothing more to do


async def test_a_followed_segment_counting_further_back_keeps_its_window(store_pool: asyncpg.Pool) -> None:
    wide = segment("id: wide\nversion: 1\nmatch: {event: PurchaseCompleted, count: {at_least: 3}, within: 200d}\n")
    store = SegmentStore(store_pool, [wide])
    assert store.kept_for(RETENTION) == timedelta(days=200)
    dan = f"dan-{uuid.uuid4().hex[:8]}"
    await store.observe([event(dan, 150), event(dan, 120), event(dan, 5), event(dan, 250)], now=NOW)
    assert dan in await store.members("wide")
    assert await store.prune_events(RETENTION, NOW) == 1  # only the one at 250 days
    assert (await store.preview(wide, NOW)).members >= 1 and dan in (await store.preview(wide, NOW)).sample


async def test_one_pruner_at_a_time_the_segment_refreshers_lock(store_pool: asyncpg.Pool) -> None:
    store = SegmentStore(store_pool, SEGMENTS)
    eve = f"eve-{uuid.uuid4().hex[:8]}"
    await store.observe([event(eve, 300), event(eve, 1)], now=NOW)
    async with store_pool.acquire() as other:
        assert await other.fetchval("SELECT pg_try_advisory_lock(hashtextextended('eventflow:segment-refresh', 0))")
        try:
            assert await store.prune_if_leader(RETENTION, NOW) is None  # another process is refreshing
            assert await store.refresh_if_leader(NOW) is None
        finally:
            await other.execute("SELECT pg_advisory_unlock(hashtextextended('eventflow:segment-refresh', 0))")
    assert await store.prune_if_leader(RETENTION, NOW)  # earlier tests' customers may lose old events too
    assert [kind for kind, _ in (await rows(store_pool, [eve]))[eve]] == ["PurchaseCompleted"]


async def test_the_consumers_refresher_prunes_after_each_full_refresh(store_pool: asyncpg.Pool) -> None:
    store = SegmentStore(store_pool, SEGMENTS)
    fay = f"fay-{uuid.uuid4().hex[:8]}"
    # Real time here: the refresher evaluates at the database's clock.
    now = datetime.now(UTC)
    await store.observe([ObservedEvent(uuid.uuid4().hex, fay, "PurchaseCompleted", now - timedelta(days=days), {})
                         for days in (120, 100, 2)], now=now)
    refresher, stop = SegmentRefresher(store, interval_seconds=0.2, retention=RETENTION), asyncio.Event()
    running = asyncio.create_task(refresher.run(stop))
    try:
        await eventually(lambda: _kept(store_pool, fay, 1), timeout_seconds=30,
                         message="the refresher to prune the events older than the retention")
    finally:
        stop.set()
        await running


async def _kept(pool: asyncpg.Pool, customer: str, expected: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM eventflow.customer_events WHERE customer_id = $1",
                               customer) == expected


def test_validation_refuses_a_count_window_longer_than_the_retention(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    audiences = tmp_path / "audiences"
    audiences.mkdir()
    (audiences / "yearly.yaml").write_text(
        "id: yearly\nversion: 1\nmatch:\n  event: PurchaseCompleted\n  count: {at_least: 4}\n  within: 400d\n")
    (audiences / "lapsed.yaml").write_text(  # time since the last one reads the newest only: any window
        "id: lapsed\nversion: 1\nmatch: {event: PurchaseCompleted, not_within: 1000d}\n")
    with pytest.raises(SegmentError) as caught:
        load_segments(tmp_path)
    [problem] = caught.value.problems
    assert Path(problem.file).name == "yearly.yaml" and problem.line == 6
    assert "longer than the 366d" in problem.message and RETENTION_VARIABLE in problem.message
    monkeypatch.setenv(RETENTION_VARIABLE, "400")
    assert sorted(s.id for s in load_segments(tmp_path)) == ["lapsed", "yearly"]


async def test_a_leader_whose_unlock_failed_does_not_return_the_lock_to_the_pool(
        store_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool keeps sessions as they are (store/pool.py), so a connection still holding the session lock
    # must be closed, not released, or no process could lead again.
    lone = await create_pool(store_dsn, min_size=1, max_size=2)
    try:
        monkeypatch.setattr(store_segments, "_LEADER_UNLOCK", "SELECT 1 / 0")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await SegmentStore(lone, SEGMENTS).refresh_if_leader(NOW, only=[])
        async with lone.acquire() as first, lone.acquire() as second:  # every connection the pool has
            for conn in (first, second):
                assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                           " AND pid = pg_backend_pid()") == 0
    finally:
        await lone.close()
