"""Segment membership in PostgreSQL: the typed predicate compiled to SQL, kept current per customer.

`compile_condition` turns a `journeys.segments.Condition` into a SQL boolean over one customer
(alias ``u.customer_id``, profile ``c.fields``). Every value a segment author wrote (a field name, a
literal, an event type, a window) becomes a bind parameter: no text from a definition is pasted
into the statement, so no definition can change what the statement does. Each leaf is wrapped in
``COALESCE(..., false)`` so a missing field is "does not match", and ``not`` of it is "matches".
A ``consent`` condition is the send path's consent gate (`store.ledger.PostgresLedger.reserve`): no
channel-wide opt-out, and for a topic the customer's recorded choice, else the topic's declared
default (`activities.topics.asked_default`, from the topics file the store was given), so a
segment admits exactly the customers a send of that topic would not skip for consent.

Membership is kept current incrementally: `SegmentStore.observe` records the events segments read
(``customer_events``, one row per event id, so a redelivered event counts once) and then
re-evaluates every segment for just the customers of that batch, under each customer's advisory
lock, inserting and deleting ``segment_members`` rows and logging each entry and exit in
``segment_changes``. Conditions that change with time alone (``within``, ``not_within``, event
counts in a window) are re-evaluated for everyone by `refresh_all`, which the consumer runs on a
schedule (docs/architecture.md, ADR-15).

``customer_events`` is pruned by the same one refresher (`prune_if_leader`): a customer's events older
than the retention go, in chunks of customers, except the newest of each type, so a count in a window
up to the retention, the time since the last event and the last event's payload read the same after
pruning as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

import asyncpg

from activities.topics import ConsentDefault, TopicCatalog, asked_default
from events.model import CustomerEvent
from journeys.paths import lookup
from journeys.segments import (
    All,
    AnyOf,
    Compare,
    Comparison,
    Condition,
    Consent,
    CountBound,
    EventCount,
    LastEvent,
    LastPayload,
    Not,
    ProfileField,
    Segment,
)
from store._time import instant
from store.customers import Batcher
from store.metrics import StatementKind, StoreMetrics, timed

_SQL_OPS = {Comparison.EQUALS: "=", Comparison.NOT_EQUALS: "<>", Comparison.GREATER_THAN: ">",
            Comparison.LESS_THAN: "<", Comparison.AT_LEAST: ">=", Comparison.AT_MOST: "<="}
#: Every customer the store knows: a profile, or events a segment reads.
_UNIVERSE = ("(SELECT customer_id FROM eventflow.customers UNION"
             " SELECT DISTINCT customer_id FROM eventflow.customer_events)")
SAMPLE_SIZE = 10
#: Customers re-evaluated per transaction by `SegmentStore.refresh_all`.
REFRESH_CHUNK = 500
#: Customers whose old events one statement of `SegmentStore.prune_events` deletes.
PRUNE_CHUNK = 500
#: Observations one consumer runs at once. One, so events that arrive while it runs wait and go together:
#: the re-evaluation's statement is planned per batch, and single-event batches made PostgreSQL the
#: bound (docs/benchmarks.md, the segment-cost phase: 0.69 of the rate without segments unbounded, 0.85 with one).
OBSERVE_FLUSHES = 1
#: Re-evaluation statements a store keeps built (`SegmentStore._refresh_statement`).
_STATEMENTS_KEPT = 16
#: The session lock one refresher (and pruner) at a time holds.
_LEADER_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('eventflow:segment-refresh', 0))"
_LEADER_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('eventflow:segment-refresh', 0))"


class Change(StrEnum):
    ENTERED = "entered"
    LEFT = "left"


@dataclass(frozen=True)
class MembershipChange:
    segment_id: str
    version: int
    customer_id: str
    change: Change


@dataclass(frozen=True)
class Preview:
    segment_id: str
    members: int
    customers: int
    sample: tuple[str, ...]

    @property
    def matches_everyone(self) -> bool:
        return self.customers > 0 and self.members == self.customers


@dataclass(frozen=True)
class ObservedEvent:
    """One event as segments see it: who, what, when, and only the payload fields some segment reads."""

    event_id: str
    customer_id: str
    event_type: str
    occurred_at: datetime
    fields: Mapping[str, Any]


class _Params:
    """Allocates ``$n`` placeholders; the statement's text never holds a definition's value."""

    def __init__(self, first: Sequence[Any] = ()) -> None:
        self.values: list[Any] = list(first)

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


def _compare(expression_json: str, compare: Compare, params: _Params) -> str:
    """``expression_json`` is a jsonb value; strings and booleans compare as jsonb, numbers as numeric."""
    if compare.op is Comparison.IN:
        return f"{expression_json} = ANY({params([json.dumps(v) for v in compare.values], '::jsonb[]')})"
    (value,) = compare.values
    if isinstance(value, float):
        number = f"(CASE WHEN jsonb_typeof({expression_json}) = 'number' THEN ({expression_json})::text::numeric END)"
        return f"{number} {_SQL_OPS[compare.op]} {params(value, '::numeric')}"
    return f"{expression_json} {_SQL_OPS[compare.op]} {params(json.dumps(value), '::jsonb')}"


def consent_gate(topics: TopicCatalog, topic_name: str) -> tuple[bool, str]:
    """Whether consent to ``topic_name`` is asked beyond the channel-wide opt-out, and the default that
    holds for a customer who never chose, exactly as a send of the topic asks the ledger.

    No topic, or a transactional one: only the channel-wide opt-out decides. A topic the topics file
    does not declare (a segment published against another release's file) counts as an explicit
    opt-in topic: only a recorded opt-in admits (a send of it would not go at all).
    """
    if not topic_name:
        return False, ""
    topic = topics.get(topic_name)
    default = asked_default(topic) if topic is not None else ConsentDefault.OPTED_OUT.value
    return bool(default), default


_NO_TOPICS = TopicCatalog()


def compile_condition(condition: Condition, params: _Params, now: str, topics: TopicCatalog = _NO_TOPICS) -> str:
    """A SQL boolean over ``u.customer_id`` and ``c.fields``; ``now`` is the placeholder of the evaluation time.

    ``topics`` give a ``consent`` condition its topic's default (`consent_gate`), as a bind parameter too.
    """
    match condition:
        case ProfileField(path=field, test=test):
            if isinstance(test, bool):
                held = f"COALESCE(c.fields ? {params(field)}, false)"
                return held if test else f"NOT {held}"
            value = f"(c.fields -> {params(field)} -> 'v')"
            return f"COALESCE({_compare(value, test, params)}, false)"
        case Consent(channel=channel, topic=topic):
            asked, default = consent_gate(topics, topic)
            on = params(channel)
            # The ledger's two questions, in its order: a channel-wide opt-out, then the topic's consent.
            channel_open = ("NOT EXISTS (SELECT 1 FROM eventflow.consent k WHERE k.customer_id = u.customer_id"
                            f" AND k.channel = {on} AND k.topic = '' AND k.state = 'opted_out')")
            chosen = ("(SELECT k.state FROM eventflow.consent k WHERE k.customer_id = u.customer_id"
                      f" AND k.channel = {on} AND k.topic = {params(topic)})")
            topic_given = f"COALESCE({chosen}, {params(default, '::text')}) = 'opted_in'"
            return f"({channel_open} AND (NOT {params(asked, '::boolean')} OR {topic_given}))"
        case EventCount(event_type=event_type, bound=bound, count=count, within=within):
            counted = ("(SELECT count(*) FROM eventflow.customer_events e WHERE e.customer_id = u.customer_id"
                       f" AND e.event_type = {params(event_type)}"
                       f" AND e.occurred_at > {now} - {params(within, '::interval')})")
            return f"{counted} {'>=' if bound is CountBound.AT_LEAST else '<='} {params(count, '::bigint')}"
        case LastEvent(event_type=event_type, window=window, recent=recent):
            exists = ("EXISTS (SELECT 1 FROM eventflow.customer_events e WHERE e.customer_id = u.customer_id"
                      f" AND e.event_type = {params(event_type)}"
                      f" AND e.occurred_at > {now} - {params(window, '::interval')})")
            return exists if recent else f"NOT {exists}"
        case LastPayload(event_type=event_type, path=path, compare=compare):
            last = ("(SELECT e.fields -> " + params(path) + " FROM eventflow.customer_events e"
                    f" WHERE e.customer_id = u.customer_id AND e.event_type = {params(event_type)}"
                    " ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT 1)")
            return f"COALESCE({_compare(last, compare, params)}, false)"
        case All(items=items):
            return "(" + " AND ".join(compile_condition(item, params, now, topics) for item in items) + ")"
        case AnyOf(items=items):
            return "(" + " OR ".join(compile_condition(item, params, now, topics) for item in items) + ")"
        case Not(item=item):
            return f"(NOT {compile_condition(item, params, now, topics)})"
        case _:
            assert_never(condition)


def _matching(segment: Segment, params: _Params, universe: str, now: str, topics: TopicCatalog) -> str:
    predicate = compile_condition(segment.match, params, now, topics)
    return (f"SELECT u.customer_id FROM {universe} AS u(customer_id)"
            " LEFT JOIN eventflow.customers c ON c.customer_id = u.customer_id"
            " WHERE NOT EXISTS (SELECT 1 FROM eventflow.tombstones t WHERE t.customer_id = u.customer_id)"
            f" AND {predicate}")


#: The evaluation time: the caller's (tests, a broadcast's fixed moment) or the database's clock.
_NOW_OF_BATCH = "COALESCE($2::timestamptz, now())"
_NOW_OF_PREVIEW = "COALESCE($1::timestamptz, now())"


def observed_fields(payload: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The payload values at ``paths`` (``payload.total``) that are strings, numbers or booleans."""
    context = {"payload": payload}
    kept: dict[str, Any] = {}
    for path in paths:
        value = lookup(context, path)
        if isinstance(value, str | int | float | bool):
            kept[path] = value
    return kept


@dataclass(frozen=True)
class _Definitions:
    """One set of segments and what it reads, swapped whole (`SegmentStore.update`)."""

    segments: tuple[Segment, ...]
    event_types: frozenset[str]
    paths: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, segments: Sequence[Segment]) -> _Definitions:
        paths: dict[str, set[str]] = {}
        for segment in segments:
            for event_type, found in segment.payload_paths().items():
                paths.setdefault(event_type, set()).update(found)
        return cls(tuple(segments), frozenset().union(*(s.event_types() for s in segments)),
                   {event_type: frozenset(found) for event_type, found in paths.items()})


class SegmentStore:
    """Membership of the segments the process follows: the files it loaded, or the live catalog's
    (`update` swaps the set; each batch and refresh evaluates one set throughout).

    ``topics``: the declared subscription topics (the topics file the workers send by), whose
    defaults a ``consent`` condition applies to customers who never chose (`consent_gate`).
    """

    def __init__(self, pool: asyncpg.Pool, segments: Sequence[Segment], *, topics: TopicCatalog = _NO_TOPICS,
                 metrics: StoreMetrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics
        self._topics = topics
        self._defs = _Definitions.of(segments)
        self._statements: dict[tuple[tuple[str, int], ...], tuple[str, tuple[Any, ...]]] = {}

    def update(self, segments: Sequence[Segment]) -> None:
        """Follows ``segments`` from now on (one assignment on the event loop: a batch in flight keeps its set).

        Members stay as they are until re-evaluated: by their next event or profile change, or by a
        refresh (the consumer refreshes the changed segments at once, `consumer.segment_triggers`).
        """
        self._defs = _Definitions.of(segments)
        self._statements = {}

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._defs.segments

    @property
    def event_types(self) -> frozenset[str]:
        return self._defs.event_types

    def reads(self, event_type: str) -> bool:
        """Whether any segment reads events of this type (others cost no database write)."""
        return event_type in self._defs.event_types

    def payload_paths(self, event_type: str) -> frozenset[str]:
        return self._defs.paths.get(event_type, frozenset())

    async def observe(self, events: Sequence[ObservedEvent], customers: Iterable[str] = (),
                      now: datetime | None = None, *, only: Collection[str] | None = None) -> list[MembershipChange]:
        """Records ``events`` (each event id once) and re-evaluates the segments of their customers and
        of ``customers`` (profile or consent changes); returns the entries and exits, in one transaction.

        A forgotten customer's events are not recorded and their segments not evaluated (the tombstone
        is read by the statement that takes the customers' locks). ``only`` limits the re-evaluation to
        those segment ids (a refresh after they changed).
        """
        touched = sorted({event.customer_id for event in events} | set(customers))
        segments = tuple(s for s in self._defs.segments if only is None or s.id in only)
        if not touched or not segments:
            return []
        async with timed(self._metrics, StatementKind.SEGMENTS), self._pool.acquire() as conn, conn.transaction():
            # The same per-customer lock order everywhere: two consumers refreshing one customer serialise.
            locked = await conn.fetch(
                "SELECT id, pg_advisory_xact_lock(hashtextextended('segment:' || id, 0)) IS NULL AS unused,"
                " EXISTS (SELECT 1 FROM eventflow.tombstones t WHERE t.customer_id = id) AS forgotten"
                " FROM unnest($1::text[]) AS id ORDER BY id", touched)
            if forgotten := {row["id"] for row in locked if row["forgotten"]}:
                events = [event for event in events if event.customer_id not in forgotten]
                touched = [customer for customer in touched if customer not in forgotten]
                if not touched:
                    return []
            if events:
                await conn.execute(
                    "INSERT INTO eventflow.customer_events (event_id, customer_id, event_type, occurred_at, fields)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])"
                    " ON CONFLICT (event_id) DO NOTHING",
                    [e.event_id for e in events], [e.customer_id for e in events], [e.event_type for e in events],
                    [e.occurred_at for e in events], [json.dumps(dict(e.fields)) for e in events])
            return await self._refresh(conn, segments, touched, now)

    async def refresh_all(self, now: datetime | None = None, *, chunk: int = REFRESH_CHUNK,
                          only: Collection[str] | None = None) -> list[MembershipChange]:
        """Re-evaluates every customer (conditions that change with the clock alone; with ``only``,
        just those segments: a new version of them).

        In chunks of customers, each under the same per-customer locks as `observe`, so a refresh
        never writes back a membership a concurrent batch has just changed.
        """
        changes: list[MembershipChange] = []
        after = ""
        while True:
            ids = [row["customer_id"] for row in await self._pool.fetch(
                f"SELECT customer_id FROM {_UNIVERSE} AS u(customer_id) WHERE customer_id > $1"
                " ORDER BY customer_id LIMIT $2", after, chunk)]
            if not ids:
                return changes
            changes.extend(await self.observe([], ids, now, only=only))
            after = ids[-1]

    @asynccontextmanager
    async def _leading(self) -> AsyncIterator[bool]:
        """Whether this process holds the refresher's session lock (held until the block ends)."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval(_LEADER_LOCK):
                yield False
                return
            try:
                yield True
            finally:
                try:
                    await conn.execute(_LEADER_UNLOCK)
                except BaseException:
                    # The pool does not reset sessions (store/pool.py): a connection whose unlock did not
                    # run must not go back to it holding the lock, or no process could refresh again.
                    conn.terminate()
                    raise

    async def refresh_if_leader(self, now: datetime | None = None, *,
                                only: Collection[str] | None = None) -> list[MembershipChange] | None:
        """`refresh_all`, unless another process is refreshing (then None): one refresher at a time."""
        async with self._leading() as leader:
            return await self.refresh_all(now, only=only) if leader else None

    def kept_for(self, retention: timedelta) -> timedelta:
        """How long events must be kept: ``retention``, or the widest count window of the segments
        followed if that is longer (one published under a longer retention still counts right)."""
        return max([retention, *(window for segment in self._defs.segments for window in segment.count_windows())])

    async def prune_events(self, retention: timedelta, now: datetime | None = None, *,
                           chunk: int = PRUNE_CHUNK) -> int:
        """Deletes events older than `kept_for` ``retention`` except each customer's newest of a type;
        returns how many went. One statement (and transaction) per ``chunk`` customers.

        What a segment reads is unchanged by it: a count reads a window no longer than what is kept,
        ``within``/``not_within`` and ``last`` read the newest of a type, which stays.
        """
        before = (now or await self._pool.fetchval("SELECT now()")) - self.kept_for(retention)
        pruned, after = 0, ""
        while True:
            ids = [row["customer_id"] for row in await self._pool.fetch(
                "SELECT DISTINCT customer_id FROM eventflow.customer_events WHERE customer_id > $1"
                " ORDER BY customer_id LIMIT $2", after, chunk)]
            if not ids:
                return pruned
            async with timed(self._metrics, StatementKind.SEGMENTS):
                pruned += int(await self._pool.fetchval(
                    "WITH gone AS (DELETE FROM eventflow.customer_events e WHERE e.customer_id = ANY($1::text[])"
                    " AND e.occurred_at < $2 AND EXISTS (SELECT 1 FROM eventflow.customer_events n"
                    " WHERE n.customer_id = e.customer_id AND n.event_type = e.event_type"
                    " AND (n.occurred_at, n.event_id) > (e.occurred_at, e.event_id)) RETURNING 1)"
                    " SELECT count(*) FROM gone", ids, before) or 0)
            after = ids[-1]

    async def prune_if_leader(self, retention: timedelta, now: datetime | None = None) -> int | None:
        """`prune_events`, unless another process is refreshing or pruning (then None)."""
        async with self._leading() as leader:
            return await self.prune_events(retention, now) if leader else None

    def _refresh_statement(self, segments: Sequence[Segment]) -> tuple[str, tuple[Any, ...]]:
        """`_refresh`'s statement for ``segments`` and its values after ``$1`` (customers) and ``$2`` (now).

        Built once per set of segment versions until `update` (the text and values depend on nothing else:
        the topics are the store's), and a batch of one event would otherwise spend more building it than sending it.
        """
        key = tuple((segment.id, segment.version) for segment in segments)
        cached = self._statements.get(key)
        if cached is not None:
            return cached
        params = _Params([None, None])
        ctes: list[str] = []
        logged: list[str] = []
        for index, segment in enumerate(segments):
            sid, version = params(segment.id, "::text"), params(segment.version, "::int")
            matching = _matching(segment, params, "unnest($1::text[])", _NOW_OF_BATCH, self._topics)
            ctes.append(
                f"matching_{index} AS ({matching}),"
                f" entered_{index} AS (INSERT INTO eventflow.segment_members"
                " (segment_id, customer_id, version, entered_at, entry_id)"
                f" SELECT {sid}, customer_id, {version}, {_NOW_OF_BATCH}, nextval('eventflow.segment_changes_id_seq')"
                # Members already in stay as they are: no entry id drawn, no insertion tried (the customers'
                # locks keep this check and the insert together; the conflict clause stays a net).
                f" FROM matching_{index} AS x WHERE NOT EXISTS (SELECT 1 FROM eventflow.segment_members m"
                f" WHERE m.segment_id = {sid} AND m.customer_id = x.customer_id)"
                " ON CONFLICT DO NOTHING RETURNING customer_id, entry_id),"
                f" exited_{index} AS (DELETE FROM eventflow.segment_members m WHERE m.segment_id = {sid}"
                f" AND m.customer_id = ANY($1::text[]) AND m.customer_id NOT IN (SELECT customer_id FROM matching_{index})"
                " RETURNING m.customer_id, m.entry_id),"
                f" logged_{index} AS (INSERT INTO eventflow.segment_changes"
                " (id, segment_id, version, customer_id, change, at, entry_id)"
                f" SELECT entry_id, {sid}, {version}, customer_id, 'entered', {_NOW_OF_BATCH}, entry_id"
                f" FROM entered_{index} UNION ALL SELECT nextval('eventflow.segment_changes_id_seq'), {sid}, {version},"
                f" customer_id, 'left', {_NOW_OF_BATCH}, entry_id FROM exited_{index} RETURNING customer_id, change)")
            logged.append(f"SELECT {index} AS segment, customer_id, change FROM logged_{index}")
        statement = (f"WITH {', '.join(ctes)} SELECT segment, customer_id, change FROM"
                     f" ({' UNION ALL '.join(logged)}) AS changes ORDER BY segment, customer_id",
                     tuple(params.values[2:]))
        if len(self._statements) >= _STATEMENTS_KEPT:
            self._statements.clear()  # sets of segments come and go with the catalog; a few are live at once
        self._statements[key] = statement
        return statement

    async def _refresh(self, conn: Any, segments: Sequence[Segment], customers: list[str],
                       now: datetime | None) -> list[MembershipChange]:
        """Every segment's entries and exits for ``customers``, in one statement (one round trip per batch,
        however many segments): per segment, who matches, who entered, who left, and the log of both."""
        statement, values = self._refresh_statement(segments)
        # Planned once per connection, not per batch: custom plans for this statement took more than
        # its execution (the plan is the same for any customers: index lookups by customer id).
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = await conn.fetch(statement, customers, now, *values)
        return [MembershipChange(segments[row["segment"]].id, segments[row["segment"]].version, row["customer_id"],
                                 Change(row["change"])) for row in rows]

    async def preview(self, segment: Segment, now: datetime | None = None) -> Preview:
        """Evaluates ``segment`` over everyone without changing membership: count, total and a sample."""
        params = _Params([now])
        matching = _matching(segment, params, _UNIVERSE, _NOW_OF_PREVIEW, self._topics)
        async with timed(self._metrics, StatementKind.SEGMENTS):
            row = await self._pool.fetchrow(
                f"WITH matching AS ({matching})"
                " SELECT (SELECT count(*) FROM matching) AS members,"
                f" (SELECT count(*) FROM {_UNIVERSE} AS u(customer_id) WHERE NOT EXISTS"
                " (SELECT 1 FROM eventflow.tombstones t WHERE t.customer_id = u.customer_id)) AS customers,"
                f" ARRAY(SELECT customer_id FROM matching ORDER BY customer_id LIMIT {SAMPLE_SIZE}) AS sample,"
                " $1::timestamptz AS evaluated_at",
                *params.values)
        assert row is not None
        return Preview(segment.id, int(row["members"]), int(row["customers"]), tuple(row["sample"]))

    async def members(self, segment_id: str) -> list[str]:
        rows = await self._pool.fetch("SELECT customer_id FROM eventflow.segment_members WHERE segment_id = $1"
                                      " ORDER BY customer_id", segment_id)
        return [row["customer_id"] for row in rows]


class SegmentBatcher:
    """The consumer's view of segments: the events and customers of one moment observed together,
    one transaction per batch (`SegmentStore.observe`)."""

    def __init__(self, store: SegmentStore) -> None:
        self._store = store
        self._observe = Batcher[CustomerEvent, None](self._flush, max_flushes=OBSERVE_FLUSHES)

    @property
    def store(self) -> SegmentStore:
        return self._store

    def reads(self, event_type: str) -> bool:
        return self._store.reads(event_type)

    async def _flush(self, events: list[CustomerEvent]) -> list[None]:
        read = [ObservedEvent(e.event_id, e.customer.id, e.event_type, instant(e.occurred_at),
                              observed_fields(e.payload, self._store.payload_paths(e.event_type)))
                for e in events if self._store.reads(e.event_type)]
        await self._store.observe(read, {e.customer.id for e in events})
        return [None] * len(events)

    async def observe(self, event: CustomerEvent) -> None:
        """Records ``event`` if a segment reads its type, and re-evaluates its customer's segments."""
        await self._observe(event)


@dataclass(frozen=True)
class PendingChange:
    """An entry or exit whose journeys have not yet been started or signalled."""

    id: int
    segment_id: str
    version: int
    customer_id: str
    change: Change
    at: datetime
    entry_id: int
    timezone: str | None
    locale: str | None


async def dispatch_pending(pool: asyncpg.Pool, handle: Callable[[list[PendingChange]], Awaitable[None]], *,
                           limit: int = 100) -> int:
    """Hands the oldest undispatched changes to ``handle`` and marks them dispatched when it returns.

    The rows stay locked while ``handle`` runs (other consumers skip them); if it raises, nothing is
    marked and the changes come again. A customer's change waits while an earlier one of theirs is
    pending elsewhere, so an exit is never signalled before its entry's start.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT ch.id, ch.segment_id, ch.version, ch.customer_id, ch.change, ch.at, ch.entry_id,"
            " c.fields -> 'timezone' ->> 'v' AS timezone, c.fields -> 'locale' ->> 'v' AS locale"
            " FROM eventflow.segment_changes ch LEFT JOIN eventflow.customers c ON c.customer_id = ch.customer_id"
            " WHERE NOT ch.dispatched AND NOT EXISTS (SELECT 1 FROM eventflow.segment_changes p"
            " WHERE p.customer_id = ch.customer_id AND p.id < ch.id AND NOT p.dispatched)"
            " ORDER BY ch.id LIMIT $1 FOR UPDATE OF ch SKIP LOCKED", limit)
        if not rows:
            return 0
        await handle([PendingChange(row["id"], row["segment_id"], row["version"], row["customer_id"],
                                    Change(row["change"]), row["at"], row["entry_id"], row["timezone"], row["locale"])
                      for row in rows])
        await conn.execute("UPDATE eventflow.segment_changes SET dispatched = true WHERE id = ANY($1::bigint[])",
                           [row["id"] for row in rows])
    return len(rows)
