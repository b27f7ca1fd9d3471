"""Segment membership evaluated in the real PostgreSQL, kept current per batch, every change logged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.ledger import ReserveRequest
from activities.outcomes import ReserveDecision
from activities.topics import ConsentDefault, Topic, TopicCatalog, asked_default
from journeys._yaml import load_located
from journeys.segments import (
    AnyOf,
    Attributes,
    Compare,
    Comparison,
    Consent,
    LastEvent,
    Not,
    ProfileField,
    Segment,
    ValueType,
    parse_segment,
)
from store.customers import CustomerStore, FieldCipher, ProfileWrite
from store.forgetting import forget
from store.ledger import PostgresLedger, set_consent
from store.segments import (
    Change,
    MembershipChange,
    ObservedEvent,
    SegmentStore,
    _Params,
    compile_condition,
    consent_gate,
)
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


async def test_a_set_of_segments_swapped_in_is_evaluated_by_its_own_statement(store_pool: asyncpg.Pool) -> None:
    """The re-evaluation statement is built once per set of segments; `update` must not keep the old one,
    even for a definition under the same id and version (files edited without a version bump)."""
    customers, segments = CustomerStore(store_pool, FieldCipher(None)), SegmentStore(store_pool, [GOLD])
    alice = new_id()
    await set_tier(customers, alice, "silver", NOW)
    assert await segments.observe([], [alice], NOW) == []
    segments.update([segment("id: gold\nversion: 2\nmatch: {profile: attributes.tier, equals: silver}\n")])
    assert await segments.observe([], [alice], NOW) == [MembershipChange("gold", 2, alice, Change.ENTERED)]


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


TOPICS = TopicCatalog((
    Topic("recommendations", {"en": "Recommendations"}),  # soft opt-in: default opted_in
    Topic("product_news", {"en": "Product news"}, channels=("email",), default=ConsentDefault.OPTED_OUT),
    Topic("order_updates", {"en": "Order updates"}, transactional=True),
))


async def test_a_consent_condition_admits_exactly_whom_a_send_of_the_topic_would_not_skip(
        store_pool: asyncpg.Pool) -> None:
    """Never asked means the topic's default, a channel-wide opt-out wins, a transactional topic asks
    nothing more: each customer x condition decided as `PostgresLedger.reserve` decides the send."""
    choices: dict[str, list[tuple[str, bool]]] = {
        "never_asked": [],
        "news_in": [("product_news", True)],
        "news_out": [("product_news", False)],
        "recommendations_out": [("recommendations", False)],
        "recommendations_in": [("recommendations", True)],
        "email_out": [("", False)],
        "email_out_news_in": [("", False), ("product_news", True)],
        "orders_out": [("order_updates", False)],  # recorded, but a transactional topic cannot be left
    }
    customers = {name: new_id() for name in choices}
    async with store_pool.acquire() as conn:
        for name, recorded in choices.items():
            for topic, subscribed in recorded:
                await set_consent(conn, customers[name], "email", subscribed=subscribed, source="test",
                                  changed_at=NOW, topic=topic)
    asked = {f"c{index}": Consent(channel, topic) for index, (channel, topic) in enumerate(
        [("email", "recommendations"), ("email", "product_news"), ("email", "order_updates"), ("email", ""),
         ("sms", "recommendations")])}
    segments = [Segment(segment_id, 1, "", condition) for segment_id, condition in asked.items()]
    segments += [Segment(f"not_{segment_id}", 1, "", Not(condition)) for segment_id, condition in asked.items()]
    store = SegmentStore(store_pool, segments, topics=TOPICS)
    await store.observe([], customers.values(), NOW)

    ledger = PostgresLedger(store_pool)
    for segment_id, condition in asked.items():
        members, others = set(await store.members(segment_id)), set(await store.members(f"not_{segment_id}"))
        for name, customer in customers.items():
            reservation = await ledger.reserve(ReserveRequest(
                idempotency_key=f"{segment_id}:{customer}", customer_id=customer, channel=condition.channel,
                topic=condition.topic, topic_default=asked_default(TOPICS.get(condition.topic))))
            sent = reservation.decision not in {ReserveDecision.OPTED_OUT, ReserveDecision.NO_CONSENT}
            assert (customer in members) is sent, (name, condition, reservation.decision)
            assert (customer in others) is not sent, (name, condition)
    # Spelled out for the reader: the defaults, not only recorded opt-ins, decide.
    news, recommendations = set(await store.members("c1")), set(await store.members("c0"))
    assert customers["never_asked"] in recommendations and customers["never_asked"] not in news
    assert customers["news_in"] in news and customers["email_out_news_in"] not in news
    assert customers["recommendations_out"] not in recommendations
    assert customers["orders_out"] in set(await store.members("c2"))


def test_an_undeclared_topic_admits_only_a_recorded_opt_in() -> None:
    assert consent_gate(TOPICS, "") == (False, "")
    assert consent_gate(TOPICS, "order_updates") == (False, "")
    assert consent_gate(TOPICS, "recommendations") == (True, "opted_in")
    assert consent_gate(TOPICS, "product_news") == (True, "opted_out")
    assert consent_gate(TopicCatalog(), "recommendations") == (True, "opted_out")


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


async def test_an_observation_of_a_forgotten_customer_records_nothing(store_pool: asyncpg.Pool) -> None:
    segments = SegmentStore(store_pool, [LAPSED])
    erin, frank = new_id(), new_id()
    await store_pool.execute("INSERT INTO eventflow.tombstones (customer_id) VALUES ($1)", erin)

    # One batch with both: the tombstone is read in the observation's own transaction.
    changes = await segments.observe([purchase(erin, NOW - timedelta(days=90)), purchase(frank, NOW - timedelta(days=90))],
                                     [erin], NOW)

    assert changes == [MembershipChange("lapsed", 1, frank, Change.ENTERED)], changes
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.customer_events WHERE customer_id = $1", erin) == 0
    assert await segments.observe([purchase(erin, NOW)], [erin], NOW) == []


async def test_preview_counts_members_and_flags_a_segment_that_matches_everyone(store_pool: asyncpg.Pool) -> None:
    segments = SegmentStore(store_pool, [])
    everyone = segment("id: everyone\nversion: 1\nmatch: {not: {profile: attributes.tier, equals: nobody-has-this}}\n")
    preview = await segments.preview(everyone, NOW)
    assert preview.customers > 0 and preview.members == preview.customers and preview.matches_everyone
    gold = await segments.preview(GOLD, NOW)
    assert 0 <= gold.members < gold.customers and not gold.matches_everyone
    assert len(gold.sample) <= 10


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.text(max_size=40), st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t),
       st.text(max_size=40), st.sampled_from([*ConsentDefault, None]))
def test_the_statement_text_depends_on_the_structure_only(literal: str, event_type: str, topic: str,
                                                           default: ConsentDefault | None) -> None:
    """Whatever an author writes as a value, and whatever the topics file declares, is a bind parameter:
    the SQL text is the same for every value."""
    def compiled(value: str, kind: str, topic: str, topics: TopicCatalog) -> tuple[str, list[object]]:
        params = _Params()
        condition = AnyOf((ProfileField("attributes.note", Compare(Comparison.EQUALS, (value,))),
                           LastEvent(kind, timedelta(days=1), recent=True), Consent("email", topic)))
        return compile_condition(condition, params, "now()", topics), params.values

    declared = TopicCatalog((Topic(topic, {"en": "t"}, default=default),) if topic and default else ())
    sql, values = compiled(literal, event_type, topic, declared)
    assert sql == compiled("placeholder", "Placeholder", "", TopicCatalog())[0]
    assert sql == compiled("placeholder", "Placeholder", "news", TOPICS)[0]
    assert json.dumps(literal) in values and event_type in values and topic in values


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
