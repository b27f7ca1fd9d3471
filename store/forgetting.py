"""Erasing one customer from the store, in one transaction, leaving a tombstone."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from store.metrics import StatementKind, StoreMetrics, timed


@dataclass(frozen=True)
class StoreErasure:
    """What one forget removed from the store (counts and field names, never values)."""

    known: bool
    profile_fields: tuple[str, ...] = ()
    consent_rows: int = 0
    sends: int = 0
    addresses: int = 0
    journey_events: int = 0
    whatsapp_windows: int = 0


async def forget(pool: asyncpg.Pool, customer_id: str, *, tombstone_unknown: bool = False,
                 metrics: StoreMetrics | None = None) -> StoreErasure:
    """Deletes the customer's profile, consent (and its audit trail), sends, push devices, address
    links, funnel events, segment data, broadcast recipients and WhatsApp windows (when they last
    wrote), and records a tombstone so no later event restarts them (only a newer identify event does).

    An id the store has never seen is left alone (a typo would otherwise silence a real customer
    later) unless ``tombstone_unknown``.
    """
    async with timed(metrics, StatementKind.FORGET), pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", customer_id)
        fields = await conn.fetchval("DELETE FROM eventflow.customers WHERE customer_id = $1 RETURNING fields",
                                     customer_id)
        consent = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.consent WHERE customer_id = $1 RETURNING 1) SELECT count(*) FROM gone",
            customer_id)
        await conn.execute("DELETE FROM eventflow.consent_audit WHERE customer_id = $1", customer_id)
        sends = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.sends WHERE customer_id = $1 RETURNING 1) SELECT count(*) FROM gone",
            customer_id)
        # Push registrations are contact points: gone with the profile (their per-send marks name none).
        devices = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.devices WHERE customer_id = $1 RETURNING 1) SELECT count(*) FROM gone",
            customer_id)
        addresses = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.address_index WHERE customer_id = $1 RETURNING 1)"
            " SELECT count(*) FROM gone", customer_id)
        events = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.journey_events WHERE customer_id = $1 RETURNING 1)"
            " SELECT count(*) FROM gone", customer_id)
        # What segments know of the customer: the events they read, memberships and their log.
        events += await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.customer_events WHERE customer_id = $1 RETURNING 1)"
            " SELECT count(*) FROM gone", customer_id)
        await conn.execute("DELETE FROM eventflow.segment_members WHERE customer_id = $1", customer_id)
        await conn.execute("DELETE FROM eventflow.segment_changes WHERE customer_id = $1", customer_id)
        await conn.execute("DELETE FROM eventflow.broadcast_recipients WHERE customer_id = $1", customer_id)
        windows = await conn.fetchval(
            "WITH gone AS (DELETE FROM eventflow.whatsapp_inbound WHERE customer_id = $1 RETURNING 1)"
            " SELECT count(*) FROM gone", customer_id)
        known = bool(fields is not None or consent or sends or addresses or events or windows or devices)
        if known or tombstone_unknown:
            await conn.execute("INSERT INTO eventflow.tombstones (customer_id) VALUES ($1)"
                               " ON CONFLICT (customer_id) DO UPDATE SET forgotten_at = now()", customer_id)
    names = tuple(sorted(_field_names(fields)))
    return StoreErasure(known, names, int(consent or 0), int(sends or 0), int(addresses or 0), int(events or 0),
                        int(windows or 0))


def _field_names(fields: object) -> list[str]:
    if isinstance(fields, str):
        fields = json.loads(fields)
    return list(fields) if isinstance(fields, dict) else []
