"""Funnel events in the customer store: written beside the ledger's own writes, aggregated in SQL.

A delivered send of a journey step writes a ``sent`` row in the transaction that records the
delivery (`store.ledger.PostgresLedger.complete_step`); a provider's report on it writes a
``delivery`` row (one per outcome) in the transaction that applies the report (`store.feedback`).
Neither costs a Temporal action or a round trip of its own. `funnel` aggregates them for
``eventflow journeys report`` in a few grouped statements, whatever the number of instances.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from journeys.goals import WAITABLE_OUTCOMES
from journeys.report import STAGES, Funnel, StageCounts
from store.metrics import StatementKind, StoreMetrics, timed

#: A connection of the pool or a plain one.
Conn = asyncpg.Connection | PoolConnectionProxy


class FunnelKind(StrEnum):
    """What a funnel row records (``eventflow.journey_events.kind``)."""

    #: A send of the step reached the provider (the ledger says delivered).
    SENT = "sent"
    #: The provider reported on that send (``outcome``: delivered, opened, clicked, bounced...).
    DELIVERY = "delivery"


async def record_delivery(conn: Conn, idempotency_key: str, outcome: str) -> None:
    """Adds a ``delivery`` row for the send's reported outcome, beside its ``sent`` row (none: not a journey send)."""
    await conn.execute(
        "INSERT INTO eventflow.journey_events (journey_id, journey_version, customer_id, workflow_id, kind, step_id,"
        " outcome, idempotency_key, channel, arm)"
        " SELECT journey_id, journey_version, customer_id, workflow_id, $3, step_id, $2, idempotency_key, channel, arm"
        " FROM eventflow.journey_events WHERE idempotency_key = $1 AND kind = $4 ON CONFLICT DO NOTHING",
        idempotency_key, outcome, FunnelKind.DELIVERY.value, FunnelKind.SENT.value)


def _stage_columns() -> str:
    # One FILTERed distinct count per stage: an instance counts once per stage however many reports it had.
    return ", ".join(
        f"count(DISTINCT workflow_id) FILTER (WHERE kind = 'delivery' AND outcome = ANY(${index + 3}::text[]))"
        f" AS {stage}" for index, stage in enumerate(STAGES))


def _counts(row: asyncpg.Record) -> StageCounts:
    return StageCounts(sent=row["sent"], stages={stage: row[stage] for stage in STAGES})


async def funnel(pool: asyncpg.Pool, journey_id: str, version: int | None = None,
                 metrics: StoreMetrics | None = None) -> Funnel:
    """The journey's funnel (every version, or ``version``) from its funnel events."""
    selected = (f"SELECT count(DISTINCT workflow_id) FILTER (WHERE kind = 'sent') AS sent, {_stage_columns()}"
                " FROM eventflow.journey_events WHERE journey_id = $1 AND ($2::integer IS NULL OR journey_version = $2)")
    stages = [sorted(WAITABLE_OUTCOMES[stage]) for stage in STAGES]
    async with timed(metrics, StatementKind.FUNNEL), pool.acquire() as conn, conn.transaction(readonly=True):
        totals = await conn.fetchrow(selected, journey_id, version, *stages)
        assert totals is not None  # an aggregate without GROUP BY always answers one row
        steps = await conn.fetch(f"{selected.replace('SELECT ', 'SELECT step_id, min(at) AS first_at, ', 1)}"
                                 " GROUP BY step_id ORDER BY first_at, step_id", journey_id, version, *stages)
        arms = await conn.fetch(f"{selected.replace('SELECT ', 'SELECT arm, ', 1)} GROUP BY arm ORDER BY arm",
                                journey_id, version, *stages)
        versions = await conn.fetch(
            "SELECT DISTINCT journey_version FROM eventflow.journey_events WHERE journey_id = $1"
            " AND ($2::integer IS NULL OR journey_version = $2) ORDER BY journey_version", journey_id, version)
    return Funnel(journey_id=journey_id, versions=tuple(row["journey_version"] for row in versions),
                  totals=_counts(totals), steps=[(row["step_id"], _counts(row)) for row in steps],
                  arms=[(row["arm"], _counts(row)) for row in arms])
