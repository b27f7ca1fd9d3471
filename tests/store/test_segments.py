"""Segment membership evaluated in the real PostgreSQL, kept current per batch, every change logged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys._yaml import load_located
from journeys.segments import (
    AnyOf,
    Attributes,
    Compare,
    Comparison,
    LastEvent,
    ProfileField,
    Segment,
    ValueType,
    parse_segment,
)
from store.customers import CustomerStore, FieldCipher, ProfileWrite
from store.forgetting import forget
from store.ledger import set_consent
from store.segments import Change, MembershipChange, ObservedEvent, SegmentStore, _Params, compile_condition
from workflows.profile import ProfileUpdate

ATTRIBUTES = Attributes({"tier": ValueType.STRING, "lifetime_value": ValueType.NUMBER, "note": ValueType.STRING})
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def segment(text: str) -> Segment:
    parsed, problems = parse_segment("test.yaml", load_located(text), ATTRIBUTES, None)
    assert parsed is not None, problems
    return parsed


def new_id() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def purchase(customer: str, at: datetime, total: float = 10.0, event_id: str | None = None) -> ObservedEvent:
    return ObservedEvent(event_id or uuid.uuid4().hex, customer, "PurchaseCompleted", at, {"payload.total": total})


async def set_tier(store: CustomerStore, customer: str, tier: str, at: datetime) -> None:
    update = ProfileUpdate(uuid.uuid4().hex, at.isoformat(), attributes={"tier": tier})
    await store.apply_profile_updates([ProfileWrite(customer, update)])


GOLD = segment("id: gold\nversion: 2\nmatch: {profile: attributes.tier, equals: gold}\n")
REPEAT = segment("""
id: repeat
version: 1
match:
  all:
    - {event: PurchaseCompleted, count: {at_least: 2}, within: 30d}
    - consent: {channel: email, topic: product_news}
""")
LAPSED = segment("id: lapsed\nversion: 1\nmatch: {event: PurchaseCompleted, not_within: 60d}\n")
BIG_LAST = segment("""
id: big_last
version: 1
match: {event: PurchaseCompleted, last: {field: payload.total, greater_than: 100}}
""")


async def test_a_profile_change_enters_and_leaves_a_segment_and_each_change_is_logged(
        store_pool: asyncpg.Pool) -> None:
    customers, segments = CustomerStore(store_pool, FieldCipher(None)), SegmentStore(store_pool, [GOLD])
    alice = new_id()
    await set_tier(customers, alice, "gold", NOW)
    assert await segments.observe([], [alice], NOW) == [MembershipChange("gold", 2, alice, Change.ENTERED)]
    assert await segments.observe([], [alice], NOW) == []  # nothing changed: nothing logged twice
    await set_tier(customers, alice, "silver", NOW + timedelta(minutes=1))
    assert await segments.observe([], [alice], NOW) == [MembershipChange("gold", 2, alice, Change.LEFT)]
    log = await store_pool.fetch("SELECT change, version FROM eventflow.segment_changes WHERE customer_id = $1"
                                 " ORDER BY id", alice)
    assert [(row["change"], row["version"]) for row in log] == [("entered", 2), ("left", 2)]
    assert alice not in await segments.members("gold")


async def test_event_counts_need_consent_and_count_a_redelivered_event_once(store_pool: asyncpg.Pool) -> None:
    segments = SegmentStore(store_pool, [REPEAT])
    bob = new_id()
    first = purchase(bob, NOW - timedelta(days=3))
    assert await segments.observe([first], now=NOW) == []
    assert await segments.observe([first], now=NOW) == []  # the same event id again: still one purchase
    async with store_pool.acquire() as conn:
        await set_consent(conn, bob, "email", subscribed=True, source="test", changed_at=NOW, topic="product_news")
    assert await segments.observe([], [bob], NOW) == []
    assert await segments.observe([purchase(bob, NOW - timedelta(days=1))], now=NOW) == [
        MembershipChange("repeat", 1, bob, Change.ENTERED)]
    # Thirty days later the first purchase is out of the window: the clock alone makes bob leave.
    assert await segments.refresh_all(NOW + timedelta(days=28)) == [MembershipChange("repeat", 1, bob, Change.LEFT)]


async def test_time_since_the_last_event_and_the_last_events_payload(store_pool: asyncpg.Pool) -> None:
    segments = SegmentStore(store_pool, [LAPSED, BIG_LAST])
    carol = new_id()
    await segments.observe([purchase(carol, NOW - timedelta(days=10), total=250.0),
                            purchase(carol, NOW - timedelta(days=5), total=20.0)], now=NOW)
    assert carol not in await segments.members("lapsed")
    assert carol not in await segments.members("big_last")  # the last purchase was small
    changes = await segments.refresh_all(NOW + timedelta(days=61))
    assert MembershipChange("lapsed", 1, carol, Change.ENTERED) in changes
    await segments.observe([purchase(carol, NOW + timedelta(days=62), total=101.0)], now=NOW + timedelta(days=62))
    assert carol in await segments.members("big_last")
    assert carol not in await segments.members("lapsed")


async def test_a_forgotten_customer_is_in_no_segment_and_leaves_nothing_behind(store_pool: asyncpg.Pool) -> None:
    customers, segments = CustomerStore(store_pool, FieldCipher(None)), SegmentStore(store_pool, [GOLD, LAPSED])
    dave = new_id()
    await set_tier(customers, dave, "gold", NOW)
    await segments.observe([purchase(dave, NOW - timedelta(days=90))], [dave], NOW)
    assert dave in await segments.members("gold")
    await forget(store_pool, dave)
    assert await segments.refresh_all(NOW) == [] or dave not in await segments.members("gold")
    for table in ("customer_events", "segment_members", "segment_changes"):
        assert await store_pool.fetchval(f"SELECT count(*) FROM eventflow.{table} WHERE customer_id = $1", dave) == 0
    assert (await segments.preview(GOLD, NOW)).sample.count(dave) == 0


async def test_preview_counts_members_and_flags_a_segment_that_matches_everyone(store_pool: asyncpg.Pool) -> None:
    segments = SegmentStore(store_pool, [])
    everyone = segment("id: everyone\nversion: 1\nmatch: {not: {profile: attributes.tier, equals: nobody-has-this}}\n")
    preview = await segments.preview(everyone, NOW)
    assert preview.customers > 0 and preview.members == preview.customers and preview.matches_everyone
    gold = await segments.preview(GOLD, NOW)
    assert 0 <= gold.members < gold.customers and not gold.matches_everyone
    assert len(gold.sample) <= 10


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.text(max_size=40), st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t))
def test_the_statement_text_depends_on_the_structure_only(literal: str, event_type: str) -> None:
    """Whatever an author writes as a value is a bind parameter: the SQL text is the same for every value."""
    def compiled(value: str, kind: str) -> tuple[str, list[object]]:
        params = _Params()
        condition = AnyOf((ProfileField("attributes.note", Compare(Comparison.EQUALS, (value,))),
                           LastEvent(kind, timedelta(days=1), recent=True)))
        return compile_condition(condition, params, "now()"), params.values

    sql, values = compiled(literal, event_type)
    assert sql == compiled("placeholder", "Placeholder")[0]
    assert json.dumps(literal) in values and event_type in values


async def test_a_hostile_literal_is_compared_not_executed(store_pool: asyncpg.Pool) -> None:
    customers = CustomerStore(store_pool, FieldCipher(None))
    hostile = "x'); DROP TABLE eventflow.customers; --"
    erin = new_id()
    update = ProfileUpdate(uuid.uuid4().hex, NOW.isoformat(), attributes={"note": hostile})
    await customers.apply_profile_updates([ProfileWrite(erin, update)])
    noted = segment(f"id: noted\nversion: 1\nmatch: {{profile: attributes.note, equals: \"{hostile}\"}}\n")
    segments = SegmentStore(store_pool, [noted])
    assert await segments.observe([], [erin], NOW) == [MembershipChange("noted", 1, erin, Change.ENTERED)]
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.customers WHERE customer_id = $1", erin) == 1


async def test_one_refresher_at_a_time_and_in_chunks_under_the_customer_locks(store_pool: asyncpg.Pool) -> None:
    customers, segments = CustomerStore(store_pool, FieldCipher(None)), SegmentStore(store_pool, [GOLD])
    golden = [new_id() for _ in range(5)]
    for customer in golden:
        await set_tier(customers, customer, "gold", NOW)
    async with store_pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock(hashtextextended('eventflow:segment-refresh', 0))")
        try:
            assert await segments.refresh_if_leader(NOW) is None, "another process holds the refresh"
        finally:
            await other.execute("SELECT pg_advisory_unlock(hashtextextended('eventflow:segment-refresh', 0))")
    changes = await segments.refresh_all(NOW, chunk=2)  # several chunks, each its own transaction
    assert {c.customer_id for c in changes if c.change is Change.ENTERED} >= set(golden)
    assert await segments.refresh_if_leader(NOW) == []  # nothing left to change
