"""The consumer's profile writes on the real PostgreSQL: the tombstone check is the write's own statement."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from prometheus_client import CollectorRegistry

from store.customers import CustomerBatcher, CustomerStore, FieldCipher
from store.metrics import StatementKind, StoreMetrics
from workflows.profile import ProfileUpdate


def _customer() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def _statements(registry: CollectorRegistry, kind: StatementKind) -> float:
    return registry.get_sample_value("eventflow_db_statement_seconds_count", {"kind": kind.value}) or 0.0


async def test_a_forgotten_customers_write_is_refused_by_the_statement_that_makes_the_others(
        store_pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    store = CustomerStore(store_pool, FieldCipher(None), metrics=StoreMetrics(registry))
    batcher = CustomerBatcher(store)
    alive, gone, unknown = _customer(), _customer(), _customer()
    await store_pool.execute("INSERT INTO eventflow.tombstones (customer_id) VALUES ($1)", gone)

    def update(customer: str) -> ProfileUpdate:
        return ProfileUpdate(f"e-{customer}", "2026-11-01T00:00:00Z", email=f"{customer}@example.com")

    # One turn of the event loop: one batch, with a check-only call (an event that carries no profile).
    written = await asyncio.gather(batcher.write_profile(alive, update(alive)), batcher.write_profile(gone, update(gone)),
                                   batcher.write_profile(unknown, None))

    assert written == [True, False, True]
    assert (_statements(registry, StatementKind.PROFILE_BATCH), _statements(registry, StatementKind.TOMBSTONE_BATCH)) \
        == (1, 0)
    assert (await store.contact_points(alive)).email == f"{alive}@example.com"
    assert await store.field_names(gone) == [] and await store.field_names(unknown) == []
    indexed = await store_pool.fetch("SELECT customer_id FROM eventflow.address_index WHERE customer_id = ANY($1)",
                                     [alive, gone])
    assert [row["customer_id"] for row in indexed] == [alive]
    # A forgotten customer with nothing to write is still named.
    assert await batcher.write_profile(gone, None) is False
