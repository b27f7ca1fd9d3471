"""Which journey instances each customer has, kept in the store instead of Temporal's visibility.

The consumer starts journeys without search attributes (on the server's visibility store they were
the bridge's bound: docs/architecture.md, "Journey instances in the store"). Instead, before a
start, it records the instance here in the statement that checks the customer's tombstone, one
statement per batch of starts (`JourneyInstances.enter`). A row is written before its start, so a
crash between the two leaves a row for a journey that never ran, never a journey without a row.

Readers: ``customers forget`` (the customer's workflow ids, deleted from the table only after
their executions are gone from Temporal, so a forget that failed halfway finds them again),
``journeys status`` and ``journeys report --version``. Instances started before this table (with
the ``CustomerId``/``JourneyId``/``JourneyVersion`` search attributes) are still found through
visibility by those commands.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg

from store.ledger import Conn
from store.metrics import StatementKind, StoreMetrics, timed


@dataclass(frozen=True)
class JourneyEntry:
    """One journey instance about to be started for a customer."""

    workflow_id: str
    journey_id: str
    journey_version: int
    customer_id: str


async def customer_journeys(conn: Conn | asyncpg.Pool, customer_id: str) -> list[str]:
    """The workflow ids of the customer's journeys, in order (on a pool, or in a caller's transaction)."""
    rows = await conn.fetch("SELECT DISTINCT workflow_id FROM eventflow.journey_instances WHERE customer_id = $1"
                            " ORDER BY workflow_id", customer_id)
    return [row["workflow_id"] for row in rows]


class JourneyInstances:
    """The ``journey_instances`` table on one pool."""

    def __init__(self, pool: asyncpg.Pool, metrics: StoreMetrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics

    async def enter(self, entries: Sequence[JourneyEntry]) -> set[str]:
        """Records ``entries`` whose customer has no tombstone, in one statement; returns the customers
        that have one (their journeys must not start)."""
        async with timed(self._metrics, StatementKind.JOURNEY_ENTRY):
            rows = await self._pool.fetch(
                "WITH entering AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])"
                " AS e(workflow_id, journey_version, journey_id, customer_id)),"
                " forgotten AS (SELECT customer_id FROM eventflow.tombstones"
                " WHERE customer_id IN (SELECT customer_id FROM entering)),"
                " recorded AS (INSERT INTO eventflow.journey_instances"
                " (workflow_id, journey_version, journey_id, customer_id)"
                " SELECT DISTINCT ON (workflow_id, journey_version) workflow_id, journey_version, journey_id,"
                " customer_id FROM entering WHERE customer_id NOT IN (SELECT customer_id FROM forgotten)"
                " ON CONFLICT (workflow_id, journey_version) DO NOTHING)"
                " SELECT customer_id FROM forgotten",
                [e.workflow_id for e in entries], [e.journey_version for e in entries],
                [e.journey_id for e in entries], [e.customer_id for e in entries])
        return {row["customer_id"] for row in rows}

    async def of_customer(self, customer_id: str) -> list[str]:
        """The workflow ids of the customer's journeys, in order."""
        async with timed(self._metrics, StatementKind.REPORT):
            return await customer_journeys(self._pool, customer_id)

    async def count(self, journey_id: str, version: int) -> int:
        """The instances of one version of a journey (a workflow id re-entered at that version once)."""
        async with timed(self._metrics, StatementKind.REPORT):
            return int(await self._pool.fetchval(
                "SELECT count(*) FROM eventflow.journey_instances WHERE journey_id = $1 AND journey_version = $2",
                journey_id, version) or 0)

    async def of_version(self, journey_id: str, version: int, workflow_ids: Collection[str]) -> set[str]:
        """Which of ``workflow_ids`` are instances of that version of the journey."""
        async with timed(self._metrics, StatementKind.REPORT):
            rows = await self._pool.fetch(
                "SELECT DISTINCT workflow_id FROM eventflow.journey_instances WHERE journey_id = $1"
                " AND journey_version = $2 AND workflow_id = ANY($3::text[])", journey_id, version, list(workflow_ids))
        return {row["workflow_id"] for row in rows}

    async def forget(self, customer_id: str) -> int:
        """Deletes the customer's rows (once their executions are gone); returns how many went."""
        async with timed(self._metrics, StatementKind.FORGET):
            return int(await self._pool.fetchval(
                "WITH gone AS (DELETE FROM eventflow.journey_instances WHERE customer_id = $1 RETURNING 1)"
                " SELECT count(*) FROM gone", customer_id) or 0)
