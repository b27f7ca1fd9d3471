"""Consent per customer, channel and topic, as the preference center reads and changes it.

A change is written only where it differs from what holds (the recorded state, else the topic's
default), so submitting the same choices twice changes nothing and adds nothing to the audit
trail; every change that is written goes through `store.ledger.set_consent`, which appends it to
``eventflow.consent_audit`` with its source and time. The send activity reads the same rows in
`PostgresLedger.reserve`, so a change holds for the next send.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from activities.topics import ConsentDefault, TopicCatalog
from store.ledger import Conn, set_consent

#: The pseudo-topic of a channel-wide consent row (the opt-out every send obeys).
CHANNEL_WIDE = ""


@dataclass(frozen=True)
class ConsentChange:
    """One wanted state: subscribed or not, to ``topic`` (``""``: the channel as a whole) on ``channel``."""

    channel: str
    topic: str
    subscribed: bool


@dataclass(frozen=True)
class AuditEntry:
    """One recorded consent change."""

    channel: str
    topic: str
    state: str
    source: str
    changed_at: datetime


class ConsentStore:
    """Reads and changes one customer's consent on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def states(self, customer_id: str) -> dict[tuple[str, str], str]:
        """(channel, topic) -> recorded state, for every row the customer has."""
        rows = await self._pool.fetch("SELECT channel, topic, state FROM eventflow.consent WHERE customer_id = $1",
                                      customer_id)
        return {(row["channel"], row["topic"]): row["state"] for row in rows}

    async def locale(self, customer_id: str) -> str | None:
        """The locale in the customer's profile (not a contact field: stored in clear), or None."""
        value = await self._pool.fetchval(
            "SELECT fields->'locale'->>'v' FROM eventflow.customers WHERE customer_id = $1", customer_id)
        return str(value) if value else None

    async def apply(self, customer_id: str, changes: Iterable[ConsentChange], topics: TopicCatalog, *,
                    source: str, form: tuple[str, datetime] | None = None) -> list[ConsentChange] | None:
        """Writes the changes that differ from what holds, in one transaction; returns those written.

        A change to a transactional or undeclared topic is ignored (the caller offered none).
        ``form`` is a submitted form's nonce and expiry, recorded as used in the same transaction;
        None is returned, and nothing written, when it was used before (a replay).
        """
        wanted = [change for change in changes if change.topic == CHANNEL_WIDE
                  or (topic := topics.get(change.topic)) is not None and not topic.transactional
                  and change.channel in topic.channels]
        written: list[ConsentChange] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # One customer's changes serialise with their sends' reservations (the ledger's lock).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", customer_id)
            if form is not None and not await _use_form(conn, *form):
                return None
            rows = await conn.fetch("SELECT channel, topic, state FROM eventflow.consent WHERE customer_id = $1",
                                    customer_id)
            held = {(row["channel"], row["topic"]): row["state"] for row in rows}
            for change in wanted:
                if _subscribed(held.get((change.channel, change.topic)), change.topic, topics) == change.subscribed:
                    continue
                await set_consent(conn, customer_id, change.channel, subscribed=change.subscribed, source=source,
                                  changed_at=None, topic=change.topic)
                written.append(change)
        return written

    async def audit(self, customer_id: str) -> Sequence[AuditEntry]:
        """The customer's consent changes, oldest first."""
        rows = await self._pool.fetch(
            "SELECT channel, topic, state, source, changed_at FROM eventflow.consent_audit WHERE customer_id = $1"
            " ORDER BY id", customer_id)
        return [AuditEntry(r["channel"], r["topic"], r["state"], r["source"], r["changed_at"]) for r in rows]


async def _use_form(conn: Conn, nonce: str, expires_at: datetime) -> bool:
    """Records a form's nonce as used; False when it was used before (a replay)."""
    # Forms past their expiry are refused before this point, so their nonces can go.
    await conn.execute("DELETE FROM eventflow.preference_forms WHERE expires_at < now() - interval '1 day'")
    used = await conn.fetchval("INSERT INTO eventflow.preference_forms (nonce, expires_at) VALUES ($1, $2)"
                               " ON CONFLICT (nonce) DO NOTHING RETURNING true", nonce, expires_at)
    return bool(used)


def _subscribed(state: str | None, topic_name: str, topics: TopicCatalog) -> bool:
    """Whether ``state`` (None: nothing recorded) means subscribed, the topic's default deciding for None."""
    if state is not None:
        return state == ConsentDefault.OPTED_IN.value
    topic = topics.get(topic_name)
    return topic is None or topic.subscribed(None)


def subscribed(states: Mapping[tuple[str, str], str], channel: str, topic: str, topics: TopicCatalog) -> bool:
    """Whether the customer is subscribed to ``topic`` on ``channel`` given their recorded states."""
    return _subscribed(states.get((channel, topic)), topic, topics)
