"""Copying the per-customer workflows' state into the customer store, once, idempotently.

Each function writes one workflow's state in one transaction with "insert, or keep what is newer"
statements, so running an import twice (or resuming one that stopped) changes nothing the first
run wrote, and a send or event that reached the store meanwhile is not overwritten by older state.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from store._time import instant
from store.customers import CustomerStore, ProfileWrite
from store.ledger import set_consent
from workflows.preferences import PreferencesInput
from workflows.profile import PROFILE_FIELDS, ProfileUpdate


async def import_preferences(store: CustomerStore, state: PreferencesInput) -> None:
    """One ``CustomerPreferences`` workflow's profile, consent, suppressions and ledger."""
    profile = state.profile
    writes = []
    for name in PROFILE_FIELDS:
        stamp = profile.stamps.get(name)
        value = getattr(profile, name)
        if stamp is not None and value is not None:
            writes.append(ProfileWrite(state.customer_id, ProfileUpdate(stamp.event_id, stamp.occurred_at,
                                                                        **{name: value})))
    for name, value in profile.attributes.items():
        stamp = profile.stamps.get(f"attributes.{name}")
        if stamp is not None:
            writes.append(ProfileWrite(state.customer_id, ProfileUpdate(stamp.event_id, stamp.occurred_at,
                                                                        attributes={name: value})))
    if writes:
        await store.apply_profile_updates(writes)
    async with store.pool.acquire() as conn, conn.transaction():
        for channel, preference in state.channels.items():
            await set_consent(conn, state.customer_id, channel, subscribed=preference.subscribed,
                              source=preference.source or "import", changed_at=instant(preference.changed_at))
        for suppression in state.suppressions.values():
            if suppression.address_hash:
                await conn.execute(
                    "INSERT INTO eventflow.suppressions (channel, address_hash, reason, report_id, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", suppression.channel,
                    suppression.address_hash, str(suppression.reason), suppression.report_id,
                    instant(suppression.at))
        for key, entry in state.ledger.items():
            try:
                day = date.fromisoformat(entry.local_day)
            except ValueError:
                day = instant(entry.reserved_at).date()
            await conn.execute(
                "INSERT INTO eventflow.sends (idempotency_key, customer_id, channel, state, local_day, priority,"
                " attempts, lease_attempt, started_at, called_at, provider, provider_message_id, error_type, outcome,"
                " created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9), to_timestamp($9), $10, $11, $12, $13, $14)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                key, state.customer_id, entry.channel, str(entry.state), day, entry.priority, entry.attempts,
                entry.lease_attempt, entry.started_epoch_seconds, entry.provider, entry.provider_message_id,
                entry.error_type, entry.outcome, instant(entry.reserved_at))


async def import_address(store: CustomerStore, channel: str, address_hash: str, owners: list[str]) -> None:
    """One ``AddressContacts`` workflow: which customers an address belongs to."""
    if owners:
        await store.pool.execute(
            "INSERT INTO eventflow.address_index (channel, address_hash, customer_id)"
            " SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING", channel, address_hash, owners)


async def import_tombstone(store: CustomerStore, customer_id: str, forgotten_at: str) -> None:
    """One running ``CustomerTombstone``."""
    await store.pool.execute(
        "INSERT INTO eventflow.tombstones (customer_id, forgotten_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        customer_id, instant(forgotten_at) if forgotten_at else datetime.now(UTC))


def describe(state: PreferencesInput) -> str:
    """What an import of ``state`` writes, as counts (never values)."""
    return json.dumps({"profile_fields": len(state.profile.stamps), "consent": len(state.channels),
                       "suppressions": len(state.suppressions), "sends": len(state.ledger)})
