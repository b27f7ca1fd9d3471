"""Broadcasts in PostgreSQL: one message to a segment's members, now or at a (local) time, paced.

A broadcast's audience is fixed when it starts (`BroadcastStore.fix_audience`): the segment's
members at that moment become ``broadcast_recipients`` rows, each due at the broadcast's time or,
with a local time, at that time of day in the recipient's own zone. Customers who join later are
not sent to (a broadcast is not half-served to late joiners); customers forgotten meanwhile are
skipped by the send path's tombstone and contact checks.

Exactly once per recipient: each send's idempotency key is ``broadcast:<id>:<customer>``, leased
and completed in the delivery ledger like every other send, so a batch redone after a crash finds
the sends it already made delivered and calls no provider twice. Cancel: a batch holds the
broadcast row ``FOR SHARE`` for its whole length and checks the state under it; `cancel` updates
the row, which waits for a running batch to end, so once it returns nobody else is sent to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from core.errors import EventflowError


class BroadcastState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RecipientState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"


class BroadcastError(EventflowError):
    """A broadcast command that cannot be carried out (unknown id, already exists, already started)."""


@dataclass(frozen=True)
class BroadcastMessage:
    """What every recipient gets: one channel's variants of one template, snapshotted at creation.

    ``topic``: the subscription topic (journeys/topics.yaml) whose consent decides each send, as a
    journey's send step names one; ``""``: none, the channel-wide opt-out alone (and snapshots
    recorded before topics read so).
    """

    channel: str
    template_id: str
    default_locale: str
    variants: Mapping[str, Mapping[str, Any]]
    priority: str = ""
    topic: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "template_id": self.template_id, "default_locale": self.default_locale,
                "variants": {k: dict(v) for k, v in self.variants.items()}, "priority": self.priority,
                "topic": self.topic}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BroadcastMessage:
        return cls(str(data["channel"]), str(data["template_id"]), str(data["default_locale"]),
                   {str(k): dict(v) for k, v in dict(data["variants"]).items()}, str(data.get("priority", "")),
                   str(data.get("topic", "")))


@dataclass(frozen=True)
class Broadcast:
    broadcast_id: str
    segment_id: str
    message: BroadcastMessage
    send_at: datetime
    rate_per_second: float
    local_time: time | None = None
    state: BroadcastState = BroadcastState.SCHEDULED


@dataclass(frozen=True)
class Recipient:
    """A due recipient, with their stored profile fields as the batch read them (empty: no profile)."""

    customer_id: str
    timezone: str | None
    locale: str | None
    attempts: int
    profile: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipientResult:
    customer_id: str
    state: RecipientState
    reason: str = ""
    #: Still pending: due again at this time (a deferral), or None to retry with the next batch.
    due_at: datetime | None = None


@dataclass(frozen=True)
class BroadcastProgress:
    broadcast_id: str
    segment_id: str
    state: BroadcastState
    send_at: datetime
    planned: int | None
    sent: int
    skipped: dict[str, int] = field(default_factory=dict)
    remaining: int = 0

    @property
    def done(self) -> int:
        return self.sent + sum(self.skipped.values())


Conn = asyncpg.Connection | PoolConnectionProxy


class BroadcastStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def create(self, broadcast: Broadcast) -> None:
        """Records a new broadcast, scheduled; raises `BroadcastError` when its id is taken."""
        try:
            await self._pool.execute(
                "INSERT INTO eventflow.broadcasts (broadcast_id, segment_id, message, send_at, local_time,"
                " rate_per_second, state) VALUES ($1, $2, $3::jsonb, $4, $5, $6, 'scheduled')",
                broadcast.broadcast_id, broadcast.segment_id, json.dumps(broadcast.message.as_json()), broadcast.send_at,
                broadcast.local_time, broadcast.rate_per_second)
        except asyncpg.UniqueViolationError:
            raise BroadcastError(f"broadcast {broadcast.broadcast_id!r} already exists") from None

    async def get(self, broadcast_id: str) -> Broadcast:
        row = await self._pool.fetchrow("SELECT * FROM eventflow.broadcasts WHERE broadcast_id = $1", broadcast_id)
        if row is None:
            raise BroadcastError(f"no broadcast {broadcast_id!r}")
        return Broadcast(row["broadcast_id"], row["segment_id"], BroadcastMessage.from_json(_jsonb(row["message"])),
                         row["send_at"], row["rate_per_second"], row["local_time"], BroadcastState(row["state"]))

    async def reschedule(self, broadcast_id: str, send_at: datetime, local_time: time | None) -> None:
        """Moves a broadcast that has not started; raises `BroadcastError` once it has."""
        moved = await self._pool.fetchval(
            "UPDATE eventflow.broadcasts SET send_at = $2, local_time = $3 WHERE broadcast_id = $1"
            " AND state = 'scheduled' RETURNING true", broadcast_id, send_at, local_time)
        if not moved:
            state = (await self.get(broadcast_id)).state
            raise BroadcastError(f"broadcast {broadcast_id!r} is {state}: only a scheduled one can be moved")

    async def fix_audience(self, broadcast_id: str) -> tuple[BroadcastState, int]:
        """Fixes the audience once (the segment's members now) and marks the broadcast running.

        Idempotent: a broadcast already running keeps the audience it was given.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT state, planned FROM eventflow.broadcasts WHERE broadcast_id = $1"
                                      " FOR UPDATE", broadcast_id)
            if row is None:
                raise BroadcastError(f"no broadcast {broadcast_id!r}")
            state = BroadcastState(row["state"])
            if state is not BroadcastState.SCHEDULED:
                return state, int(row["planned"] or 0)
            # Each recipient's due time: the broadcast's, or its local time of day in their zone
            # (the next such moment at or after the broadcast's time); an unknown zone is UTC.
            planned = await conn.fetchval(
                "WITH b AS (SELECT * FROM eventflow.broadcasts WHERE broadcast_id = $1),"
                " zones AS MATERIALIZED (SELECT name FROM pg_timezone_names),"
                " audience AS (SELECT m.customer_id, COALESCE(z.name, 'UTC') AS zone"
                " FROM eventflow.segment_members m JOIN b ON m.segment_id = b.segment_id"
                " LEFT JOIN eventflow.customers c ON c.customer_id = m.customer_id"
                " LEFT JOIN zones z ON z.name = c.fields -> 'timezone' ->> 'v'),"
                " inserted AS (INSERT INTO eventflow.broadcast_recipients (broadcast_id, customer_id, due_at)"
                " SELECT $1, a.customer_id, CASE WHEN b.local_time IS NULL THEN b.send_at ELSE"
                " (SELECT CASE WHEN local_at >= b.send_at THEN local_at ELSE local_at + interval '1 day' END"
                " FROM (SELECT (((b.send_at AT TIME ZONE a.zone)::date + b.local_time) AT TIME ZONE a.zone)"
                " AS local_at) AS l) END FROM audience a, b ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT count(*) FROM inserted", broadcast_id)
            await conn.execute("UPDATE eventflow.broadcasts SET state = 'running', planned = $2, started_at = now()"
                               " WHERE broadcast_id = $1", broadcast_id, planned)
            return BroadcastState.RUNNING, int(planned)

    @asynccontextmanager
    async def batch(self, broadcast_id: str) -> AsyncIterator[tuple[BroadcastState, Conn]]:
        """A transaction holding the broadcast row ``FOR SHARE`` (a cancel waits for it), with its state."""
        async with self._pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval("SELECT state FROM eventflow.broadcasts WHERE broadcast_id = $1 FOR SHARE",
                                        broadcast_id)
            if state is None:
                raise BroadcastError(f"no broadcast {broadcast_id!r}")
            yield BroadcastState(state), conn

    @staticmethod
    async def due(conn: Conn, broadcast_id: str, limit: int, now: datetime | None = None) -> list[Recipient]:
        rows = await conn.fetch(
            "SELECT r.customer_id, r.attempts, c.fields -> 'timezone' ->> 'v' AS timezone,"
            " c.fields -> 'locale' ->> 'v' AS locale, c.fields FROM eventflow.broadcast_recipients r"
            " LEFT JOIN eventflow.customers c ON c.customer_id = r.customer_id"
            " WHERE r.broadcast_id = $1 AND r.state = 'pending' AND r.due_at <= COALESCE($3, now())"
            " ORDER BY r.due_at, r.customer_id LIMIT $2", broadcast_id, limit, now)
        return [Recipient(row["customer_id"], row["timezone"], row["locale"], row["attempts"],
                          _jsonb(row["fields"]) if row["fields"] is not None else {}) for row in rows]

    @staticmethod
    async def record(conn: Conn, broadcast_id: str, results: list[RecipientResult]) -> None:
        await conn.execute(
            "UPDATE eventflow.broadcast_recipients r SET state = u.state, reason = u.reason,"
            " attempts = r.attempts + 1, due_at = COALESCE(u.due_at, r.due_at),"
            " done_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END"
            " FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS u(customer_id, state, reason, due_at)"
            " WHERE r.broadcast_id = $1 AND r.customer_id = u.customer_id AND r.state = 'pending'",
            broadcast_id, [r.customer_id for r in results], [r.state.value for r in results],
            [r.reason for r in results], [r.due_at for r in results])

    @staticmethod
    async def remaining(conn: Conn, broadcast_id: str) -> tuple[int, datetime | None]:
        row = await conn.fetchrow("SELECT count(*) AS n, min(due_at) AS next FROM eventflow.broadcast_recipients"
                                  " WHERE broadcast_id = $1 AND state = 'pending'", broadcast_id)
        assert row is not None
        return int(row["n"]), row["next"]

    async def finish(self, broadcast_id: str) -> None:
        await self._pool.execute("UPDATE eventflow.broadcasts SET state = 'completed', finished_at = now()"
                                 " WHERE broadcast_id = $1 AND state = 'running'", broadcast_id)

    async def cancel(self, broadcast_id: str) -> BroadcastState:
        """Cancels a scheduled or running broadcast; returns once no batch of it is sending any more."""
        async with self._pool.acquire() as conn, conn.transaction():
            # FOR UPDATE waits for a running batch's FOR SHARE: after this, no batch sees "running".
            state = await conn.fetchval("SELECT state FROM eventflow.broadcasts WHERE broadcast_id = $1 FOR UPDATE",
                                        broadcast_id)
            if state is None:
                raise BroadcastError(f"no broadcast {broadcast_id!r}")
            if BroadcastState(state) in {BroadcastState.SCHEDULED, BroadcastState.RUNNING}:
                await conn.execute("UPDATE eventflow.broadcasts SET state = 'cancelled', finished_at = now()"
                                   " WHERE broadcast_id = $1", broadcast_id)
                return BroadcastState.CANCELLED
            return BroadcastState(state)

    async def progress(self, broadcast_id: str) -> BroadcastProgress:
        broadcast = await self._pool.fetchrow("SELECT * FROM eventflow.broadcasts WHERE broadcast_id = $1",
                                              broadcast_id)
        if broadcast is None:
            raise BroadcastError(f"no broadcast {broadcast_id!r}")
        rows = await self._pool.fetch("SELECT state, reason, count(*) AS n FROM eventflow.broadcast_recipients"
                                      " WHERE broadcast_id = $1 GROUP BY state, reason", broadcast_id)
        sent = sum(int(r["n"]) for r in rows if r["state"] == RecipientState.SENT)
        skipped = {str(r["reason"] or "skipped"): int(r["n"]) for r in rows if r["state"] == RecipientState.SKIPPED}
        remaining = sum(int(r["n"]) for r in rows if r["state"] == RecipientState.PENDING)
        return BroadcastProgress(broadcast_id, broadcast["segment_id"], BroadcastState(broadcast["state"]),
                                 broadcast["send_at"], broadcast["planned"], sent, skipped, remaining)


def _jsonb(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)
