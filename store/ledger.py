"""The delivery ledger in PostgreSQL: one row per notification, leased to one attempt at a time.

`PostgresLedger` is the `activities.ledger.DeliveryLedger` the send activity uses. Every decision
(already delivered?, opted out?, consent to the send's topic?, suppressed?, quiet hours, rolling caps, another attempt's lease)
and the lease itself are taken in one transaction under a per-customer advisory lock, so sends to
one customer serialise on the database, however many workers and attempts race, and no Temporal
call is made. Clock: the database's ``now()``, one clock for every worker.

The uncertain window is exactly "request sent, answer not recorded" (docs/architecture.md, ADR-9):
`mark_calling` records durably that the lease holder is about to call the provider, immediately
before the call. A later attempt that finds an expired lease *without* that mark knows nothing
left, and sends again; only an expired lease *with* the mark is uncertain. `release` gives a lease
back (an attempt cancelled before its call) without needing Temporal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from activities.ledger import Completion, FunnelStep, Reservation, ReserveRequest
from activities.outcomes import LedgerState, ReserveDecision
from activities.push import DeviceState
from journeys.goals import arm_label
from store.funnel import FunnelKind
from store.metrics import StatementKind, StoreMetrics, timed
from workflows._calendar import local_day, quiet_window_end
from workflows._caps import cap_gate

#: A connection of the pool or a plain one.
Conn = asyncpg.Connection | PoolConnectionProxy
#: Rolling caps look back this many local days (the widest window, ``month``, plus the day boundary).
_CAP_LOOKBACK_DAYS = 31


@dataclass(frozen=True)
class _CountedRow:
    channel: str
    local_day: str
    state: LedgerState
    priority: str


@dataclass(frozen=True)
class SendRow:
    """One notification as the ledger holds it (for status commands and tests)."""

    idempotency_key: str
    customer_id: str
    channel: str
    state: LedgerState
    attempts: int
    lease_attempt: int
    called: bool
    provider: str
    provider_message_id: str | None
    error_type: str
    reported: bool


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class PostgresLedger:
    """The delivery ledger and preference gate, in the customer store."""

    #: Consent per topic is kept here (`activities.ledger.TopicConsentLedger`).
    keeps_topic_consent = True

    def __init__(self, pool: asyncpg.Pool, metrics: StoreMetrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics

    async def reserve(self, request: ReserveRequest) -> Reservation:
        """Checks preferences and the ledger and leases the send to the asking attempt, atomically.

        Four round trips: the transaction's begin, the customer's lock, one statement that reads
        everything the decision needs (taken after the lock, so it sees every earlier holder's
        commit), and the lease with the commit.
        """
        async with timed(self._metrics, StatementKind.RESERVE), self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", request.customer_id)
            seen = await conn.fetchrow(
                _DECISION_READ, request.customer_id, request.idempotency_key, request.channel, request.topic,
                request.address_forms() if request.address_hash else [])
            assert seen is not None  # one row: the read selects from a one-row relation
            now: datetime = seen["now"]
            state = LedgerState(seen["state"]) if seen["state"] is not None else None
            if state is LedgerState.DELIVERED:
                return Reservation(ReserveDecision.DELIVERED, provider=seen["provider"],
                                   provider_message_id=seen["provider_message_id"])
            if seen["opted_out"]:
                return Reservation(ReserveDecision.OPTED_OUT)
            if request.topic and request.topic_default \
                    and (seen["topic_state"] or request.topic_default) != "opted_in":
                return Reservation(ReserveDecision.NO_CONSENT)
            if seen["suppressed"]:
                return Reservation(ReserveDecision.SUPPRESSED)
            if state is not None and state is not LedgerState.FAILED:
                return await self._renew(conn, request, seen, now)
            quiet_end = quiet_window_end(now, request.timezone, request.quiet_hours)
            if quiet_end is not None:
                return Reservation(ReserveDecision.DEFER, not_before=_iso(quiet_end))
            today = local_day(now, request.timezone)
            capped = cap_gate(request, _counted(seen), now)
            if capped is not None:
                return capped
            await conn.execute(
                "INSERT INTO eventflow.sends (idempotency_key, customer_id, channel, state, local_day, priority,"
                " attempts, lease_attempt, lease_until, started_at)"
                " VALUES ($1, $2, $3, 'in_flight', $4, $5, 1, $6, $7, to_timestamp($8))"
                " ON CONFLICT (idempotency_key) DO UPDATE SET state = 'in_flight', local_day = EXCLUDED.local_day,"
                " attempts = eventflow.sends.attempts + 1, lease_attempt = EXCLUDED.lease_attempt,"
                " lease_until = EXCLUDED.lease_until, started_at = EXCLUDED.started_at, called_at = NULL,"
                " error_type = '', updated_at = now()",
                request.idempotency_key, request.customer_id, request.channel, date.fromisoformat(today),
                request.priority, request.attempt, _lease_until(request, now), request.now_epoch_seconds)
            return Reservation(ReserveDecision.SEND)

    async def _renew(self, conn: Conn, request: ReserveRequest, row: asyncpg.Record,
                     now: datetime) -> Reservation:
        """A later attempt (or the same one asking again) for a send reserved before.

        While another attempt's lease runs the answer is ``busy``. After it expired, the earlier
        attempt's send is uncertain only if it had marked its call (or was recorded uncertain).
        """
        same_attempt = request.attempt > 0 and row["lease_attempt"] == request.attempt
        state = LedgerState(row["state"])
        if state is LedgerState.IN_FLIGHT and not same_attempt and row["lease_until"] is not None \
                and now < row["lease_until"]:
            return Reservation(ReserveDecision.BUSY, not_before=_iso(row["lease_until"]))
        called = row["called_at"] is not None
        uncertain = not same_attempt and (state is LedgerState.UNCERTAIN or state is LedgerState.IN_FLIGHT and called)
        started: datetime | None = row["called_at"] or row["started_at"]
        await conn.execute(
            "UPDATE eventflow.sends SET state = 'in_flight', attempts = attempts + $2, lease_attempt = $3,"
            " lease_until = $4, started_at = to_timestamp($5), called_at = CASE WHEN $6 THEN called_at END,"
            " updated_at = now() WHERE idempotency_key = $1",
            request.idempotency_key, 0 if same_attempt else 1, request.attempt, _lease_until(request, now),
            request.now_epoch_seconds, same_attempt)
        return Reservation(ReserveDecision.SEND, previous_attempt_uncertain=uncertain,
                           previous_started_epoch_seconds=started.timestamp() if started else 0.0,
                           previous_provider=row["provider"] if uncertain else "")

    async def mark_calling(self, idempotency_key: str, attempt: int, provider: str = "") -> bool:
        """Records that ``attempt`` is about to call ``provider``; False when it no longer holds the lease.

        Written (and committed) immediately before the request leaves, so a crash before this point
        leaves a send that a later attempt may make without doubt. The provider goes into the row's
        ``provider`` (which a completion later overwrites with the same name, or the deliverer's), so
        an uncertain call names the provider that may hold the message.
        """
        async with timed(self._metrics, StatementKind.MARK):
            marked = await self._pool.fetchval(
                "UPDATE eventflow.sends SET called_at = now(), updated_at = now(),"
                " provider = CASE WHEN $3 = '' THEN provider ELSE $3 END"
                " WHERE idempotency_key = $1 AND state = 'in_flight' AND (lease_attempt = $2 OR $2 = 0)"
                " AND (lease_until IS NULL OR lease_until > now()) RETURNING true", idempotency_key, attempt, provider)
        return bool(marked)

    async def record_unavailable(self, idempotency_key: str, attempt: int, lease_seconds: float) -> bool:
        """The marked call was answered "unavailable": clear the mark, renew the lease; False when lost.

        One statement, so there is no moment at which the send is neither "called at provider A" nor
        "answered, nothing delivered": a crash before it leaves A's call uncertain (settled at A),
        after it leaves nothing uncertain.
        """
        async with timed(self._metrics, StatementKind.MARK):
            renewed = await self._pool.fetchval(
                "UPDATE eventflow.sends SET called_at = NULL, updated_at = now(),"
                " lease_until = CASE WHEN $3::float8 > 0 THEN now() + make_interval(secs => $3::float8) END"
                " WHERE idempotency_key = $1 AND state = 'in_flight' AND (lease_attempt = $2 OR $2 = 0)"
                " AND (lease_until IS NULL OR lease_until > now()) RETURNING true",
                idempotency_key, attempt, lease_seconds)
        return bool(renewed)

    async def release(self, idempotency_key: str, attempt: int) -> None:
        """Gives the lease back without a call (an attempt cancelled or stopped before calling)."""
        async with timed(self._metrics, StatementKind.RELEASE):
            await self._pool.execute(
                "UPDATE eventflow.sends SET state = 'retrying', lease_until = NULL, updated_at = now()"
                " WHERE idempotency_key = $1 AND state = 'in_flight' AND lease_attempt = $2 AND called_at IS NULL",
                idempotency_key, attempt)

    async def complete(self, completion: Completion) -> None:
        """Records what came of a reserved send; a fenced-out attempt's late non-delivery is ignored."""
        await self.complete_step(completion, None)

    async def complete_step(self, completion: Completion, step: FunnelStep | None) -> None:
        """`complete`, and for a delivered send of a journey step its ``sent`` funnel event, in one
        statement (so the funnel costs no round trip of its own and never disagrees with the ledger).

        One round trip and no customer lock: the row's own lock orders a completion against a
        renewal or another completion, and a reservation's read sees the statement whole or not at
        all, which is all the lock gave (it cannot order a completion before a reservation that
        already read). A provider's unsubscribe also changes consent, which is ordered by the lock.
        """
        unsubscribed = completion.outcome is LedgerState.FAILED and completion.error_type == "RecipientUnsubscribed"
        arguments = (completion.idempotency_key, completion.customer_id, completion.channel, completion.outcome.value,
                     completion.attempt, completion.provider, completion.provider_message_id, completion.error_type)
        async with timed(self._metrics, StatementKind.COMPLETE):
            if step is not None and completion.outcome is LedgerState.DELIVERED:
                await self._pool.execute(
                    f"WITH completed AS ({_COMPLETION})"
                    " INSERT INTO eventflow.journey_events (journey_id, journey_version, customer_id, workflow_id,"
                    " kind, step_id, outcome, idempotency_key, channel, arm)"
                    " VALUES ($9, $10, $2, $11, $12, $13, '', $1, $3, $14) ON CONFLICT DO NOTHING",
                    *arguments, step.journey_id, step.journey_version, step.workflow_id, FunnelKind.SENT.value,
                    step.step_id, arm_label(False, step.variants))
            elif not unsubscribed:
                await self._pool.execute(_COMPLETION, *arguments)
            else:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", completion.customer_id)
                    await conn.execute(_COMPLETION, *arguments)
                    await set_consent(conn, completion.customer_id, completion.channel, subscribed=False,
                                      source="provider", changed_at=None)

    async def device_states(self, idempotency_key: str) -> dict[str, DeviceState]:
        """Each device's state within a push send (`activities.push.DeviceLedger`)."""
        async with timed(self._metrics, StatementKind.DEVICE_MARK):
            rows = await self._pool.fetch(
                "SELECT device_id, state FROM eventflow.device_sends WHERE idempotency_key = $1", idempotency_key)
        return {row["device_id"]: DeviceState(row["state"]) for row in rows}

    async def mark_device_calling(self, idempotency_key: str, attempt: int, device_id: str) -> bool:
        """Records that ``attempt`` is about to call one device, fenced like `mark_calling` by the send's lease.

        One statement: the mark is written only while ``attempt`` holds an unexpired lease on the send
        and the device was not delivered or refused for good before.
        """
        async with timed(self._metrics, StatementKind.DEVICE_MARK):
            marked = await self._pool.fetchval(
                "INSERT INTO eventflow.device_sends (idempotency_key, device_id, state, attempt, called_at)"
                " SELECT $1, $3, 'called', $2, now() FROM eventflow.sends"
                " WHERE idempotency_key = $1 AND state = 'in_flight' AND (lease_attempt = $2 OR $2 = 0)"
                " AND (lease_until IS NULL OR lease_until > now())"
                " ON CONFLICT (idempotency_key, device_id) DO UPDATE SET state = 'called', attempt = EXCLUDED.attempt,"
                " called_at = now(), updated_at = now()"
                " WHERE eventflow.device_sends.state NOT IN ('delivered', 'failed') RETURNING true",
                idempotency_key, attempt, device_id)
        return bool(marked)

    async def complete_device(self, idempotency_key: str, device_id: str, state: DeviceState,
                              provider_message_id: str | None = None) -> None:
        """Records what came of one device's call; a delivery is never overwritten."""
        async with timed(self._metrics, StatementKind.DEVICE_MARK):
            await self._pool.execute(
                "UPDATE eventflow.device_sends SET state = $3,"
                " provider_message_id = COALESCE($4, provider_message_id), updated_at = now()"
                " WHERE idempotency_key = $1 AND device_id = $2 AND state <> 'delivered'",
                idempotency_key, device_id, state.value, provider_message_id)

    async def reported(self, idempotency_key: str) -> tuple[bool, str | None]:
        """Whether a provider report (webhook) was seen for the send, and the message id it carried."""
        async with timed(self._metrics, StatementKind.REPORTED):
            row = await self._pool.fetchrow(
                "SELECT reported_at IS NOT NULL AS reported, provider_message_id FROM eventflow.sends"
                " WHERE idempotency_key = $1", idempotency_key)
        return (bool(row["reported"]), row["provider_message_id"]) if row is not None else (False, None)

    async def send(self, idempotency_key: str) -> SendRow | None:
        """One notification's row, or None."""
        row = await self._pool.fetchrow("SELECT * FROM eventflow.sends WHERE idempotency_key = $1", idempotency_key)
        return _send_row(row) if row is not None else None

    async def sends_of(self, customer_id: str) -> Sequence[SendRow]:
        """Every notification of one customer, oldest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM eventflow.sends WHERE customer_id = $1 ORDER BY created_at, idempotency_key", customer_id)
        return [_send_row(row) for row in rows]


#: What came of a send, written over its row (or as a new one, for a send reserved before the
#: store): a delivery is never overwritten, and a fenced-out attempt's late non-delivery is ignored.
#: $1 key, $2 customer, $3 channel, $4 state, $5 attempt, $6 provider, $7 provider message id,
#: $8 error type.
_COMPLETION = (
    "INSERT INTO eventflow.sends (idempotency_key, customer_id, channel, state, local_day, attempts,"
    " lease_attempt, provider, provider_message_id, error_type)"
    " VALUES ($1, $2, $3, $4, (now() AT TIME ZONE 'UTC')::date, 1, $5, $6, $7, $8)"
    " ON CONFLICT (idempotency_key) DO UPDATE SET state = EXCLUDED.state,"
    " error_type = EXCLUDED.error_type,"
    " provider = COALESCE(NULLIF(EXCLUDED.provider, ''), eventflow.sends.provider),"
    " provider_message_id = COALESCE(EXCLUDED.provider_message_id, eventflow.sends.provider_message_id),"
    " lease_until = CASE WHEN EXCLUDED.state = 'in_flight' THEN eventflow.sends.lease_until END,"
    " updated_at = now()"
    " WHERE eventflow.sends.state <> 'delivered' AND (EXCLUDED.state = 'delivered' OR $5 = 0"
    " OR eventflow.sends.lease_attempt = 0 OR eventflow.sends.lease_attempt = $5)")


def _send_row(row: asyncpg.Record) -> SendRow:
    return SendRow(row["idempotency_key"], row["customer_id"], row["channel"], LedgerState(row["state"]),
                   row["attempts"], row["lease_attempt"], row["called_at"] is not None, row["provider"],
                   row["provider_message_id"], row["error_type"], row["reported_at"] is not None)


#: Everything `PostgresLedger.reserve` decides on, in one statement: the database's clock, the send's
#: row (all NULL when there is none), the channel's opt-out, the consent to the send's topic, whether
#: one of the address's forms is suppressed, and the customer's sends of the rolling caps' lookback
#: (from the UTC day, a day wider than any local one, as parallel arrays). $1 customer, $2 key,
#: $3 channel, $4 topic, $5 address forms.
_DECISION_READ = (
    "SELECT now() AS now, s.state, s.lease_attempt, s.lease_until, s.called_at, s.started_at, s.provider,"
    " s.provider_message_id,"
    " EXISTS (SELECT 1 FROM eventflow.consent WHERE customer_id = $1 AND channel = $3 AND topic = ''"
    " AND state = 'opted_out') AS opted_out,"
    " (SELECT state FROM eventflow.consent WHERE customer_id = $1 AND channel = $3 AND topic = $4) AS topic_state,"
    " EXISTS (SELECT 1 FROM eventflow.suppressions WHERE channel = $3 AND address_hash = ANY($5::text[]))"
    " AS suppressed,"
    " c.channels, c.days, c.states, c.priorities"
    " FROM (SELECT 1) AS one"
    " LEFT JOIN eventflow.sends s ON s.idempotency_key = $2"
    " CROSS JOIN LATERAL (SELECT array_agg(channel) AS channels, array_agg(local_day) AS days,"
    " array_agg(state) AS states, array_agg(priority) AS priorities FROM eventflow.sends"
    f" WHERE customer_id = $1 AND local_day >= (now() AT TIME ZONE 'UTC')::date - {_CAP_LOOKBACK_DAYS + 1}) AS c")


def _counted(seen: asyncpg.Record) -> list[_CountedRow]:
    return [_CountedRow(channel, day.isoformat(), LedgerState(state), priority)
            for channel, day, state, priority in zip(seen["channels"] or (), seen["days"] or (),
                                                     seen["states"] or (), seen["priorities"] or (), strict=True)]


def _lease_until(request: ReserveRequest, now: datetime) -> datetime | None:
    return now + timedelta(seconds=request.lease_seconds) if request.lease_seconds > 0 else None


async def set_consent(conn: Conn, customer_id: str, channel: str, *, subscribed: bool, source: str,
                      changed_at: datetime | None, topic: str = "") -> bool:
    """Records a consent change unless a later one is already recorded; True when it took effect.

    Every change that takes effect is appended to the audit trail.
    """
    state = "opted_in" if subscribed else "opted_out"
    applied = await conn.fetchval(
        "INSERT INTO eventflow.consent (customer_id, channel, topic, state, source, changed_at)"
        " VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))"
        " ON CONFLICT (customer_id, channel, topic) DO UPDATE SET state = EXCLUDED.state,"
        " source = EXCLUDED.source, changed_at = EXCLUDED.changed_at"
        " WHERE eventflow.consent.changed_at <= EXCLUDED.changed_at RETURNING true",
        customer_id, channel, topic, state, source, changed_at)
    if applied:
        await conn.execute(
            "INSERT INTO eventflow.consent_audit (customer_id, channel, topic, state, source, changed_at)"
            " VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))", customer_id, channel, topic, state, source,
            changed_at)
    return bool(applied)

