"""Segment membership kept current by the consumer, on the real Kafka, Temporal and PostgreSQL.

Events a segment reads are recorded once per event id and re-evaluate their customer's segments in
the same moment's batch; events no segment or journey reads cost no database write.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from temporalio.client import Client

from consumer.dispatch import Dispatcher
from consumer.routes import EventRoutes, SegmentRoutes
from events import samples
from journeys._yaml import load_located
from journeys.segments import Attributes, parse_segment
from store import CustomerBatcher, CustomerStore, FieldCipher
from store.segments import SegmentBatcher, SegmentStore
from tests.harness import eventually, start_bridge

TWICE = parse_segment("s.yaml", load_located(
    "id: bought_twice\nversion: 1\nmatch: {event: PurchaseCompleted, count: {at_least: 2}, within: 30d}\n"),
    Attributes(), None)[0]


async def test_the_consumer_keeps_membership_current_and_counts_a_redelivery_once(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
        store_pool: asyncpg.Pool) -> None:
    assert TWICE is not None
    segments = SegmentBatcher(SegmentStore(store_pool, [TWICE]))
    router = SegmentRoutes(EventRoutes([]), segments.store)
    bridge = await start_bridge(
        kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox, suffix=unique,
        router=router, with_worker=False,
        dispatcher=Dispatcher(temporal_client, f"test-journeys-{unique}",
                              CustomerBatcher(CustomerStore(store_pool, FieldCipher(None))), segments))
    try:
        customer = samples.customer()
        first = samples.purchase(customer)
        await bridge.publish(first, first, samples.cart_update(customer))  # the first purchase twice: a redelivery

        async def recorded() -> int:
            return int(await store_pool.fetchval(
                "SELECT count(*) FROM eventflow.customer_events WHERE customer_id = $1", customer["id"]))

        await eventually(recorded, message="the purchase to be recorded")
        assert await store_pool.fetchval("SELECT count(*) FROM eventflow.segment_members WHERE customer_id = $1",
                                         customer["id"]) == 0, "one purchase, counted once, is not two"
        await bridge.publish(samples.purchase(customer))

        async def member() -> bool:
            return bool(await store_pool.fetchval(
                "SELECT count(*) FROM eventflow.segment_members WHERE segment_id = 'bought_twice'"
                " AND customer_id = $1", customer["id"]))

        await eventually(member, message="the customer to enter bought_twice")
        types = await store_pool.fetch("SELECT DISTINCT event_type FROM eventflow.customer_events"
                                       " WHERE customer_id = $1", customer["id"])
        assert [row["event_type"] for row in types] == ["PurchaseCompleted"], "CartUpdated is read by no segment"
        assert await recorded() == 2
        log = await store_pool.fetch("SELECT change FROM eventflow.segment_changes WHERE customer_id = $1",
                                     customer["id"])
        assert [row["change"] for row in log] == ["entered"]
    finally:
        await bridge.stop()
