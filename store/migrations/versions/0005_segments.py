"""Segments and broadcasts: the events segments read, membership, every entry and exit, broadcasts.

``customer_events`` keeps one row per event id of the types some segment reads, with only the
payload fields a segment compares (``fields``), so a redelivered event counts once. ``segment_members``
is the current membership (the version that admitted each member, and its entry's id);
``segment_changes`` logs each entry and exit with its time and segment version (``entry_id``: the
entry an exit ends, or the entry itself), and ``dispatched`` once the journeys triggered by it
were started or signalled (an outbox: a crash before that redoes it, and Temporal's id dedupe
keeps it once). ``broadcasts`` holds each broadcast (its message snapshot, schedule, pacing, state)
and ``broadcast_recipients`` its audience, fixed when it starts: one row per customer with when it is
due (a local time in each recipient's zone) and what became of the send.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_UPGRADE = (
    """
    CREATE TABLE eventflow.customer_events (
        event_id text PRIMARY KEY,
        customer_id text NOT NULL,
        event_type text NOT NULL,
        occurred_at timestamptz NOT NULL,
        fields jsonb NOT NULL DEFAULT '{}'::jsonb
    )
    """,
    """
    CREATE INDEX customer_events_by_type ON eventflow.customer_events (customer_id, event_type, occurred_at DESC)
    """,
    """
    CREATE TABLE eventflow.segment_members (
        segment_id text NOT NULL,
        customer_id text NOT NULL,
        version integer NOT NULL,
        entered_at timestamptz NOT NULL,
        entry_id bigint NOT NULL,
        PRIMARY KEY (segment_id, customer_id)
    )
    """,
    """
    CREATE TABLE eventflow.segment_changes (
        id bigserial PRIMARY KEY,
        segment_id text NOT NULL,
        version integer NOT NULL,
        customer_id text NOT NULL,
        change text NOT NULL CHECK (change IN ('entered', 'left')),
        at timestamptz NOT NULL,
        entry_id bigint NOT NULL,
        dispatched boolean NOT NULL DEFAULT false
    )
    """,
    """
    CREATE INDEX segment_changes_pending ON eventflow.segment_changes (id) WHERE NOT dispatched
    """,
    """
    CREATE INDEX segment_changes_customer ON eventflow.segment_changes (customer_id)
    """,
    """
    CREATE TABLE eventflow.broadcasts (
        broadcast_id text PRIMARY KEY,
        segment_id text NOT NULL,
        message jsonb NOT NULL,
        send_at timestamptz NOT NULL,
        local_time time,
        rate_per_second double precision NOT NULL CHECK (rate_per_second > 0),
        state text NOT NULL CHECK (state IN ('scheduled', 'running', 'completed', 'cancelled')),
        planned integer,
        segment_version integer,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    )
    """,
    """
    CREATE TABLE eventflow.broadcast_recipients (
        broadcast_id text NOT NULL,
        customer_id text NOT NULL,
        due_at timestamptz NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'skipped')),
        reason text NOT NULL DEFAULT '',
        attempts integer NOT NULL DEFAULT 0,
        done_at timestamptz,
        PRIMARY KEY (broadcast_id, customer_id)
    )
    """,
    """
    CREATE INDEX broadcast_recipients_due ON eventflow.broadcast_recipients (broadcast_id, due_at)
        WHERE state = 'pending'
    """,
)

_TABLES = ("broadcast_recipients", "broadcasts", "segment_changes", "segment_members", "customer_events")


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE eventflow.{table}")
