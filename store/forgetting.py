"""Erasing one customer from the store, in one transaction, leaving a tombstone.

Every per-customer table is either emptied of the customer or, where an aggregate must not change
after the fact, anonymised (docs/architecture.md, "What `customers forget` covers"):

* deleted: the profile, consent and its audit trail, sends with their per-device marks and provider
  reports (both keyed by the sends' idempotency keys, which name the customer), push devices,
  address links, funnel events, the events segments read, segment memberships and their change log
  (undispatched entries too, so no segment journey starts after), and WhatsApp windows;
* anonymised: broadcast recipients. A broadcast fixed its audience and counts it in `broadcasts
  status` (planned = sent + skipped + remaining), so the row stays with its state and reason under
  a pseudonym drawn for this forget and kept nowhere; a recipient still pending is skipped with
  reason ``forgotten`` (nobody is sent to after the forget), and a local due time (which would tell
  the customer's zone) becomes the broadcast's own time;
* kept: the tombstone, suppressions and keyword records (an address hash, never a customer id),
  preference form nonces (no customer id);
* read, deleted later: the customer's journey instances (`store.journey_instances`), whose workflow ids
  ``customers forget`` deletes from Temporal before `JourneyInstances.forget` removes the rows, so a
  forget that fails between the two finds them again when it is run again.

`tests/store/test_forgetting.py` checks that no row of any table in the schema names the customer
afterwards, so a table added later without a place here fails there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from store.journey_instances import customer_journeys
from store.ledger import Conn
from store.metrics import StatementKind, StoreMetrics, timed

#: A pending broadcast recipient erased before its send (`store.broadcasts.BroadcastProgress.skipped`).
FORGOTTEN = "forgotten"


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
    consent_changes: int = 0
    devices: int = 0
    device_sends: int = 0
    provider_reports: int = 0
    customer_events: int = 0
    segment_memberships: int = 0
    segment_changes: int = 0
    #: Broadcast recipient rows kept under a pseudonym (not deleted: a broadcast's counts stay whole).
    broadcast_recipients: int = 0
    #: The workflow ids of the customer's journeys (`store.journey_instances`), for Temporal's part of the forget.
    journeys: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for ``customers forget``: what was deleted and anonymised, by count."""
        deleted = ", ".join(f"{count} {what}" for count, what in (
            (self.consent_rows, "consent records"), (self.consent_changes, "consent changes"),
            (self.sends, "sends"), (self.device_sends, "device send marks"),
            (self.provider_reports, "provider reports"), (self.devices, "push devices"),
            (self.addresses, "address links"), (self.journey_events, "funnel events"),
            (self.customer_events, "segment events"), (self.segment_memberships, "segment memberships"),
            (self.segment_changes, "segment changes"), (self.whatsapp_windows, "WhatsApp windows")))
        return (f"customer store: profile fields {', '.join(self.profile_fields) or 'none'}; {deleted} deleted; "
                f"{self.broadcast_recipients} broadcast recipients anonymised; tombstone recorded")


async def _deleted(conn: Conn, statement: str, *args: object) -> int:
    """The number of rows ``statement`` (a ``DELETE ... RETURNING 1``) removed."""
    return int(await conn.fetchval(f"WITH gone AS ({statement}) SELECT count(*) FROM gone", *args) or 0)


async def forget(pool: asyncpg.Pool, customer_id: str, *, tombstone_unknown: bool = False,
                 metrics: StoreMetrics | None = None) -> StoreErasure:
    """Deletes (or, for broadcast recipients, anonymises) everything the store keeps of the customer
    (module docstring) and records a tombstone so no later event restarts them (only a newer
    identify event does).

    An id the store has never seen is left alone (a typo would otherwise silence a real customer
    later) unless ``tombstone_unknown``.
    """
    async with timed(metrics, StatementKind.FORGET), pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", customer_id)
        fields = await conn.fetchval("DELETE FROM eventflow.customers WHERE customer_id = $1 RETURNING fields",
                                     customer_id)
        consent = await _deleted(conn, "DELETE FROM eventflow.consent WHERE customer_id = $1 RETURNING 1",
                                 customer_id)
        consent_changes = await _deleted(
            conn, "DELETE FROM eventflow.consent_audit WHERE customer_id = $1 RETURNING 1", customer_id)
        keys = [row["idempotency_key"] for row in await conn.fetch(
            "DELETE FROM eventflow.sends WHERE customer_id = $1 RETURNING idempotency_key", customer_id)]
        # Keyed by the send, not the customer, but the key names them (journey and broadcast keys do).
        device_sends = await _deleted(
            conn, "DELETE FROM eventflow.device_sends WHERE idempotency_key = ANY($1::text[]) RETURNING 1", keys)
        reports = await _deleted(
            conn, "DELETE FROM eventflow.provider_reports WHERE idempotency_key = ANY($1::text[]) RETURNING 1", keys)
        # Push registrations are contact points: gone with the profile.
        devices = await _deleted(conn, "DELETE FROM eventflow.devices WHERE customer_id = $1 RETURNING 1",
                                 customer_id)
        addresses = await _deleted(conn, "DELETE FROM eventflow.address_index WHERE customer_id = $1 RETURNING 1",
                                   customer_id)
        funnel = await _deleted(conn, "DELETE FROM eventflow.journey_events WHERE customer_id = $1 RETURNING 1",
                                customer_id)
        # What segments know of the customer: the events they read, memberships and their log.
        customer_events = await _deleted(
            conn, "DELETE FROM eventflow.customer_events WHERE customer_id = $1 RETURNING 1", customer_id)
        memberships = await _deleted(
            conn, "DELETE FROM eventflow.segment_members WHERE customer_id = $1 RETURNING 1", customer_id)
        segment_changes = await _deleted(
            conn, "DELETE FROM eventflow.segment_changes WHERE customer_id = $1 RETURNING 1", customer_id)
        recipients = int(await conn.fetchval(
            "WITH kept AS (UPDATE eventflow.broadcast_recipients r SET customer_id = $2 || gen_random_uuid(),"
            " state = CASE WHEN r.state = 'pending' THEN 'skipped' ELSE r.state END,"
            " reason = CASE WHEN r.state = 'pending' THEN $3 ELSE r.reason END,"
            " done_at = COALESCE(r.done_at, now()), due_at = b.send_at"
            " FROM eventflow.broadcasts b WHERE b.broadcast_id = r.broadcast_id AND r.customer_id = $1 RETURNING 1)"
            " SELECT count(*) FROM kept", customer_id, f"{FORGOTTEN}:", FORGOTTEN) or 0)
        windows = await _deleted(conn, "DELETE FROM eventflow.whatsapp_inbound WHERE customer_id = $1 RETURNING 1",
                                 customer_id)
        journeys = tuple(await customer_journeys(conn, customer_id))
        known = bool(fields is not None or consent or consent_changes or keys or addresses or funnel or windows
                     or devices or customer_events or memberships or segment_changes or recipients or journeys)
        if known or tombstone_unknown:
            await conn.execute("INSERT INTO eventflow.tombstones (customer_id) VALUES ($1)"
                               " ON CONFLICT (customer_id) DO UPDATE SET forgotten_at = now()", customer_id)
    names = tuple(sorted(_field_names(fields)))
    return StoreErasure(known, names, consent, len(keys), addresses, funnel, windows, consent_changes, devices,
                        device_sends, reports, customer_events, memberships, segment_changes, recipients, journeys)


def _field_names(fields: object) -> list[str]:
    if isinstance(fields, str):
        fields = json.loads(fields)
    return list(fields) if isinstance(fields, dict) else []
