"""Funnel events keyed by send: ``journey_events`` learns which send a row is about, its channel and arm.

The send activity records a ``sent`` row in the transaction that records the delivery, and the
feedback path a ``delivery`` row (one per outcome) in the transaction that applies the provider's
report, so ``eventflow journeys report`` aggregates the funnel in SQL. The unique index makes a
retried completion or a repeated report write nothing twice.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE eventflow.journey_events ADD COLUMN idempotency_key text,"
               " ADD COLUMN channel text NOT NULL DEFAULT '', ADD COLUMN arm text NOT NULL DEFAULT ''")
    op.execute("CREATE UNIQUE INDEX journey_events_send ON eventflow.journey_events (idempotency_key, kind, outcome)"
               " WHERE idempotency_key IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX eventflow.journey_events_send")
    op.execute("ALTER TABLE eventflow.journey_events DROP COLUMN idempotency_key, DROP COLUMN channel,"
               " DROP COLUMN arm")
