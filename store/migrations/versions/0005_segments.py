"""Segments: the events segments read, current membership, and every entry and exit.

``customer_events`` keeps one row per event id of the types some segment reads, with only the
payload fields a segment compares (``fields``), so a redelivered event counts once. ``segment_members``
is the current membership (the version that admitted each member, and its entry's id);
``segment_changes`` logs each entry and exit with its time and segment version (``entry_id``: the
entry an exit ends, or the entry itself), and ``dispatched`` once the journeys triggered by it
were started or signalled (an outbox: a crash before that redoes it, and Temporal's id dedupe
keeps it once).

Revision ID: 0005
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0001"
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
)

_TABLES = ("segment_changes", "segment_members", "customer_events")


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE eventflow.{table}")
