"""The customer store's first tables: profiles, contact points, consent, suppressions, sends, forgetting, journey events.

Contact points are stored encrypted (``ciphertext`` under ``key_id``) and found by a keyed hash of
the normalised address (``blind_index``), never by the address itself. Only ``contact_points``
refers to ``customers``: consent, suppressions, sends and journey events may be recorded before (or
after the forgetting of) a profile, and a tombstone outlives its customer's row.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_UPGRADE = (
    """
    CREATE TABLE eventflow.customers (
        customer_id text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        locale text,
        timezone text,
        attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
        forgotten_at timestamptz
    )
    """,
    """
    CREATE TABLE eventflow.contact_points (
        customer_id text NOT NULL REFERENCES eventflow.customers (customer_id) ON DELETE CASCADE,
        kind text NOT NULL CHECK (kind IN ('email', 'sms', 'whatsapp')),
        ciphertext bytea NOT NULL,
        key_id text NOT NULL,
        blind_index bytea NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (customer_id, kind)
    )
    """,
    # Who has this address: suppression and STOP handling arrive with an address, not a customer id.
    "CREATE INDEX contact_points_by_blind_index ON eventflow.contact_points (kind, blind_index)",
    """
    CREATE TABLE eventflow.consent (
        customer_id text NOT NULL,
        channel text NOT NULL,
        topic text NOT NULL DEFAULT '',
        state text NOT NULL CHECK (state IN ('opted_in', 'opted_out')),
        source text,
        changed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (customer_id, channel, topic)
    )
    """,
    """
    CREATE TABLE eventflow.consent_audit (
        id bigserial PRIMARY KEY,
        customer_id text NOT NULL,
        channel text NOT NULL,
        topic text NOT NULL DEFAULT '',
        state text NOT NULL CHECK (state IN ('opted_in', 'opted_out')),
        source text,
        changed_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX consent_audit_by_customer ON eventflow.consent_audit (customer_id, changed_at)",
    """
    CREATE TABLE eventflow.suppressions (
        channel text NOT NULL,
        blind_index bytea NOT NULL,
        reason text NOT NULL,
        source_event_id text,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (channel, blind_index)
    )
    """,
    """
    CREATE TABLE eventflow.sends (
        idempotency_key text PRIMARY KEY,
        customer_id text NOT NULL,
        channel text NOT NULL,
        state text NOT NULL
            CHECK (state IN ('reserved', 'calling', 'accepted', 'failed', 'uncertain', 'released', 'skipped')),
        attempt integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_expires_at timestamptz,
        called_at timestamptz,
        provider text,
        provider_message_id text,
        outcome text,
        detail text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    # Rolling frequency caps count a customer's sends on a channel within a window.
    "CREATE INDEX sends_by_customer_channel_time ON eventflow.sends (customer_id, channel, created_at)",
    """
    CREATE TABLE eventflow.tombstones (
        customer_id text PRIMARY KEY,
        forgotten_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE eventflow.journey_events (
        id bigserial PRIMARY KEY,
        journey_id text NOT NULL,
        customer_id text NOT NULL,
        workflow_id text NOT NULL,
        kind text NOT NULL,
        step text,
        outcome text,
        at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX journey_events_by_journey_kind ON eventflow.journey_events (journey_id, kind)",
)

#: Every table of this revision, dropped children first.
_TABLES = ("journey_events", "tombstones", "sends", "suppressions", "consent_audit", "consent", "contact_points",
           "customers")


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE eventflow.{table}")
