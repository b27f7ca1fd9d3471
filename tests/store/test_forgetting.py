"""Forget on the real PostgreSQL: no row of any table names the customer afterwards, but the tombstone.

The scan reads every table of the ``eventflow`` schema as text, so a table a later migration adds
with a customer id (or a key naming one) and no place in `store.forgetting.forget` fails here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import asyncpg

from activities.ledger import ReserveRequest
from journeys._yaml import load_located
from journeys.segments import Attributes, ValueType, parse_segment
from store import CustomerStore, FieldCipher, PostgresLedger
from store.broadcasts import Broadcast, BroadcastMessage, BroadcastStore, RecipientResult, RecipientState
from store.customers import ProfileWrite
from store.forgetting import FORGOTTEN, forget
from store.journey_instances import JourneyEntry, JourneyInstances
from store.ledger import set_consent
from store.segments import ObservedEvent, SegmentStore
from workflows.profile import ProfileUpdate

NOW = datetime.now(UTC)
MESSAGE = BroadcastMessage("email", "news", "en", {"en": {"subject": "News", "body": "Hello"}})


def segment(tag: str):
    parsed, problems = parse_segment("t.yaml", load_located(
        f"id: {tag}\nversion: 1\nmatch:\n  any:\n    - {{profile: attributes.tier, equals: {tag}}}\n"
        "    - {event: PurchaseCompleted, within: 30d}\n"), Attributes({"tier": ValueType.STRING}), None)
    assert parsed is not None, problems
    return parsed


async def everything(pool: asyncpg.Pool, customer: str, tag: str) -> None:
    """A row for ``customer`` in every per-customer table the store has."""
    await CustomerStore(pool, FieldCipher(None)).apply_profile_updates([ProfileWrite(customer, ProfileUpdate(
        uuid.uuid4().hex, (NOW - timedelta(days=1)).isoformat(), email=f"{customer}@example.com", first_name="Eve",
        timezone="Asia/Tokyo", attributes={"tier": tag}))])
    async with pool.acquire() as conn:
        await set_consent(conn, customer, "email", subscribed=False, source="test", changed_at=None,
                          topic="product_news")
    ledger, key = PostgresLedger(pool), f"welcome:{customer}:step-1"
    await ledger.reserve(ReserveRequest(key, customer, "push"))
    assert await ledger.mark_device_calling(key, 0, "device-1")
    await pool.execute("INSERT INTO eventflow.provider_reports (report_id, idempotency_key) VALUES ($1, $2)",
                       uuid.uuid4().hex, key)
    await pool.execute("INSERT INTO eventflow.devices (customer_id, channel, device_id, sealed)"
                       " VALUES ($1, 'push', 'device-1', 'sealed')", customer)
    await pool.execute("INSERT INTO eventflow.journey_events (journey_id, customer_id, workflow_id, kind,"
                       " idempotency_key) VALUES ('welcome', $1, $2, 'sent', $3)", customer, f"welcome:{customer}", key)
    await pool.execute("INSERT INTO eventflow.whatsapp_inbound (customer_id, address_hash, last_at)"
                       " VALUES ($1, 'hash', now())", customer)
    segments = SegmentStore(pool, [segment(tag)])
    await segments.observe([ObservedEvent(uuid.uuid4().hex, customer, "PurchaseCompleted", NOW, {})], [customer])
    assert await JourneyInstances(pool).enter([JourneyEntry(f"journey:welcome:{customer}", "welcome", 1, customer)]) \
        == set()


async def names(pool: asyncpg.Pool, customer: str) -> dict[str, int]:
    """Per table of the schema, the rows whose text anywhere holds ``customer``."""
    tables = [row["table_name"] for row in await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'eventflow'"
        " AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'")]
    found = {}
    for table in tables:
        count = await pool.fetchval(f"SELECT count(*) FROM eventflow.{table} x WHERE strpos(x::text, $1) > 0", customer)
        if count:
            found[table] = count
    return found


async def test_forget_leaves_no_row_naming_the_customer_and_keeps_broadcast_counts_whole(
        store_pool: asyncpg.Pool) -> None:
    tag = f"t{uuid.uuid4().hex[:10]}"
    eve, ned = f"eve-{uuid.uuid4().hex}", f"ned-{uuid.uuid4().hex}"
    for customer in (eve, ned):
        await everything(store_pool, customer, tag)
    broadcasts = BroadcastStore(store_pool)
    sent, pending = f"{tag}-sent", f"{tag}-pending"
    for broadcast_id in (sent, pending):
        # A local time: each recipient's due time is 10:00 in their own zone.
        await broadcasts.create(Broadcast(broadcast_id, tag, MESSAGE, NOW - timedelta(hours=1), 10.0, time(10, 0)))
        await broadcasts.fix_audience(broadcast_id)
    async with broadcasts.batch(sent) as (_, conn):
        await BroadcastStore.record(conn, sent, [RecipientResult(c, RecipientState.SENT) for c in (eve, ned)])
    before = await names(store_pool, eve)
    assert set(before) >= {"customers", "address_index", "consent", "consent_audit", "sends", "device_sends",
                           "provider_reports", "devices", "journey_events", "customer_events", "segment_members",
                           "segment_changes", "broadcast_recipients", "whatsapp_inbound", "journey_instances"}, before

    erased = await forget(store_pool, eve)

    assert erased.known and {"email", "first_name", "timezone"} <= set(erased.profile_fields), erased
    assert (erased.consent_rows, erased.consent_changes, erased.sends, erased.device_sends, erased.provider_reports,
            erased.devices, erased.addresses, erased.journey_events, erased.customer_events,
            erased.segment_memberships, erased.segment_changes, erased.whatsapp_windows,
            erased.broadcast_recipients) == (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2)
    assert erased.journeys == (f"journey:welcome:{eve}",)
    # The journey instances stay until Temporal's part of the forget has deleted their executions.
    assert await names(store_pool, eve) == {"tombstones": 1, "journey_instances": 1}
    assert await JourneyInstances(store_pool).forget(eve) == 1
    assert await names(store_pool, eve) == {"tombstones": 1}
    assert set(await names(store_pool, ned)) == set(before)  # the neighbour keeps everything
    # The broadcasts still add up: the sent one counts eve as sent, the pending one skips her, and no
    # batch finds her due (nobody is sent to after the forget).
    done = await broadcasts.progress(sent)
    assert (done.planned, done.sent, done.skipped, done.remaining) == (2, 2, {}, 0)
    waiting = await broadcasts.progress(pending)
    assert (waiting.planned, waiting.sent, waiting.skipped, waiting.remaining) == (2, 0, {FORGOTTEN: 1}, 1)
    async with broadcasts.batch(pending) as (_, conn):
        due = await BroadcastStore.due(conn, pending, 10, NOW + timedelta(days=2))
    assert [recipient.customer_id for recipient in due] == [ned]
    # Her local due time (10:00 in Tokyo) is not left to tell her zone: the broadcast's own time stands in.
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.broadcast_recipients r JOIN eventflow.broadcasts"
                                     " b USING (broadcast_id) WHERE r.customer_id LIKE 'forgotten:%'"
                                     " AND r.due_at <> b.send_at AND b.broadcast_id = ANY($1)", [sent, pending]) == 0
    assert "2 broadcast recipients anonymised" in erased.summary()
    assert "1 device send marks, 1 provider reports, 1 push devices" in erased.summary()
