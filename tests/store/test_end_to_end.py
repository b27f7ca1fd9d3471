"""Event in, one notification out, with every piece of customer state in PostgreSQL.

The consumer writes the profile and checks the tombstone in the store; the worker reads the contact
points and leases the send there. Temporal sees one workflow per notification and no per-customer
workflow at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from consumer.dispatch import Dispatcher
from core.codec import Keyring
from events import samples
from store import CustomerBatcher, CustomerStore, FieldCipher, PostgresLedger
from store.forgetting import forget
from tests.harness import Bridge, eventually, start_bridge, workflow_runs

KEYRING = Keyring({"k1": b"\x01" * 32}, "k1")


@pytest.fixture
async def store_bridge(kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
                       store_pool: asyncpg.Pool) -> AsyncIterator[Bridge]:
    store = CustomerStore(store_pool, FieldCipher(KEYRING))
    running = await start_bridge(
        kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox, suffix=unique,
        dispatcher=Dispatcher(temporal_client, f"test-journeys-{unique}", CustomerBatcher(store)),
        ledger=PostgresLedger(store_pool), contacts=store)
    try:
        yield running
    finally:
        await running.stop()


def _sent_for(bridge: Bridge, order_id: str) -> list[dict[str, object]]:
    return [m for m in bridge.sent() if order_id in str(m["workflow_id"])]


async def test_a_purchase_is_one_workflow_and_one_email_with_the_profile_in_the_store(
        store_bridge: Bridge, store_pool: asyncpg.Pool, temporal_client: Client) -> None:
    customer = samples.customer(locale="en", first_name="Dana", email="dana@example.com")
    event = samples.purchase(customer, amount="12.50")
    order_id = event["payload"]["order_id"]

    await store_bridge.publish(event, event)

    sent = await eventually(lambda: _sent_for(store_bridge, order_id), message="the thank-you email")
    assert [m["to"] for m in sent] == ["dana@example.com"]
    runs = await workflow_runs(temporal_client, store_bridge.task_queue)
    assert set(runs.values()) == {1} and all(wid.startswith("journey:") for wid in runs), runs
    fields = await store_pool.fetchval("SELECT fields::text FROM eventflow.customers WHERE customer_id = $1",
                                       customer["id"])
    assert "dana@example.com" not in fields, "contact fields are stored encrypted"
    key = f"journey:post_purchase:{customer['id']}:{order_id}/thank_you"
    state = await store_pool.fetchval("SELECT state FROM eventflow.sends WHERE idempotency_key LIKE $1",
                                      f"journey:post_purchase:{customer['id']}:{order_id}/%")
    assert state == "delivered", key
    # The journey is recorded in the store, not in search attributes (which cost every start a visibility write).
    (workflow_id,) = runs
    row = await store_pool.fetchrow("SELECT journey_id, journey_version, customer_id FROM eventflow.journey_instances"
                                    " WHERE workflow_id = $1", workflow_id)
    assert row is not None and tuple(row) == ("post_purchase", 1, customer["id"])
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    custom = {pair.key.name for pair in description.typed_search_attributes} & {"CustomerId", "JourneyId",
                                                                                  "JourneyVersion"}
    assert custom == set(), description.typed_search_attributes


async def test_a_forgotten_customer_starts_nothing_until_an_identify_event(
        store_bridge: Bridge, store_pool: asyncpg.Pool) -> None:
    customer = samples.customer(email="gone@example.com")
    first = samples.purchase(customer)
    await store_bridge.publish(first)
    await eventually(lambda: _sent_for(store_bridge, first["payload"]["order_id"]), message="the first email")

    erased = await forget(store_pool, customer["id"])
    assert erased.known and "email" in erased.profile_fields and erased.sends == 1
    later = samples.purchase(customer)
    await store_bridge.publish(later)
    await eventually(lambda: _consumed(store_bridge) >= 2, message="the later purchase to be handled")
    assert not _sent_for(store_bridge, later["payload"]["order_id"])
    recorded = await store_pool.fetch("SELECT workflow_id FROM eventflow.journey_instances WHERE customer_id = $1",
                                      customer["id"])
    assert [row["workflow_id"] for row in recorded if later["payload"]["order_id"] in row["workflow_id"]] == []
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1",
                                     customer["id"]) == 1


def _consumed(bridge: Bridge) -> float:
    return sum(sample.value for metric in bridge.metrics.registry.collect() for sample in metric.samples
               if sample.name == "eventflow_events_consumed_total")
