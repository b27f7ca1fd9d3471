"""The journey instances the consumer records before its starts, on the real PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg

from store.forgetting import forget
from store.journey_instances import JourneyEntry, JourneyInstances


def _customer() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


async def test_entries_are_recorded_once_and_a_forgotten_customers_are_refused(store_pool: asyncpg.Pool) -> None:
    instances = JourneyInstances(store_pool)
    journey = f"j_{uuid.uuid4().hex[:8]}"
    alive, gone = _customer(), _customer()
    await store_pool.execute("INSERT INTO eventflow.tombstones (customer_id) VALUES ($1)", gone)
    first = JourneyEntry(f"journey:{journey}:{alive}", journey, 1, alive)
    # A batch may hold the same instance twice (a redelivery beside its original): one row.
    refused = await instances.enter([first, first, JourneyEntry(f"journey:{journey}:{gone}", journey, 1, gone)])
    assert refused == {gone}
    assert await instances.enter([first]) == set()  # again later: still one row
    # Re-entered at a new version (a one_active journey after its first instance closed): a row per version.
    assert await instances.enter([JourneyEntry(first.workflow_id, journey, 2, alive)]) == set()

    assert await instances.of_customer(alive) == [first.workflow_id]
    assert await instances.of_customer(gone) == []
    assert (await instances.count(journey, 1), await instances.count(journey, 2)) == (1, 1)
    assert await instances.of_version(journey, 1, [first.workflow_id, "journey:other:x"]) == {first.workflow_id}
    assert await instances.of_version(journey, 3, [first.workflow_id]) == set()


async def test_a_forget_names_the_customers_journeys_and_leaves_them_until_told(store_pool: asyncpg.Pool) -> None:
    instances = JourneyInstances(store_pool)
    customer, neighbour = _customer(), _customer()
    ids = [f"journey:welcome:{customer}", f"journey:post_purchase:{customer}:o-1"]
    await instances.enter([JourneyEntry(ids[0], "welcome", 1, customer), JourneyEntry(ids[1], "post_purchase", 3, customer),
                           JourneyEntry(f"journey:welcome:{neighbour}", "welcome", 1, neighbour)])

    erased = await forget(store_pool, customer)

    assert erased.known and erased.journeys == tuple(sorted(ids))
    # Read, not deleted: Temporal's part of the forget runs next, and a second forget must find them again.
    assert (await forget(store_pool, customer)).journeys == tuple(sorted(ids))
    assert await instances.forget(customer) == 2
    assert await instances.of_customer(customer) == []
    assert await instances.of_customer(neighbour) == [f"journey:welcome:{neighbour}"]
    # Once forgotten, nothing new is recorded for the customer.
    assert await instances.enter([JourneyEntry(f"journey:welcome:{customer}", "welcome", 1, customer)]) == {customer}
