"""The customer store's first schema: profiles, consent, suppressions, sends, tombstones, funnel events.

Profiles keep each field with the event that set it (``fields``: value, occurred-at ``t``, event id
``e``) and merge field by field in ``eventflow.merge_fields`` (the later event wins). Contact fields
are stored AES-GCM encrypted; ``address_index`` is the blind index (channel, keyed address hash ->
customer). ``sends`` is the delivery ledger: one row per idempotency key with its lease and the call
mark (docs/architecture.md, ADR-10). Nothing refers to ``customers``: consent, suppressions, sends and
journey events may be recorded before a profile, and a tombstone outlives its customer's row.

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
        fields jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE FUNCTION eventflow.merge_fields(current_fields jsonb, incoming jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE AS $$
        SELECT COALESCE(jsonb_object_agg(key, CASE
            WHEN c IS NULL THEN i
            WHEN i IS NULL THEN c
            WHEN (i->>'t', i->>'e') > (c->>'t', c->>'e') THEN i
            ELSE c END), '{}'::jsonb)
        FROM (SELECT key FROM jsonb_object_keys(current_fields || incoming) AS key) AS keys,
             LATERAL (SELECT current_fields->key AS c, incoming->key AS i) AS pair
    $$
    """,
    """
    CREATE TABLE eventflow.address_index (
        channel text NOT NULL,
        address_hash text NOT NULL,
        customer_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (channel, address_hash, customer_id)
    )
    """,
    """
    CREATE INDEX address_index_customer ON eventflow.address_index (customer_id)
    """,
    """
    CREATE TABLE eventflow.consent (
        customer_id text NOT NULL,
        channel text NOT NULL,
        topic text NOT NULL DEFAULT '',
        state text NOT NULL CHECK (state IN ('opted_in', 'opted_out')),
        source text NOT NULL DEFAULT '',
        changed_at timestamptz NOT NULL,
        PRIMARY KEY (customer_id, channel, topic)
    )
    """,
    """
    CREATE TABLE eventflow.consent_audit (
        id bigserial PRIMARY KEY,
        customer_id text NOT NULL,
        channel text NOT NULL,
        topic text NOT NULL,
        state text NOT NULL,
        source text NOT NULL,
        changed_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE INDEX consent_audit_customer ON eventflow.consent_audit (customer_id)
    """,
    """
    CREATE TABLE eventflow.suppressions (
        channel text NOT NULL,
        address_hash text NOT NULL,
        reason text NOT NULL,
        report_id text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        PRIMARY KEY (channel, address_hash)
    )
    """,
    """
    CREATE TABLE eventflow.keyword_changes (
        channel text NOT NULL,
        address_hash text NOT NULL,
        last_at timestamptz NOT NULL,
        last_report_id text NOT NULL DEFAULT '',
        PRIMARY KEY (channel, address_hash)
    )
    """,
    """
    CREATE TABLE eventflow.sends (
        idempotency_key text PRIMARY KEY,
        customer_id text NOT NULL,
        channel text NOT NULL,
        state text NOT NULL CHECK (state IN ('in_flight', 'retrying', 'uncertain', 'delivered', 'failed')),
        local_day date NOT NULL,
        priority text NOT NULL DEFAULT '',
        attempts integer NOT NULL DEFAULT 1,
        lease_attempt integer NOT NULL DEFAULT 0,
        lease_until timestamptz,
        started_at timestamptz,
        called_at timestamptz,
        provider text NOT NULL DEFAULT '',
        provider_message_id text,
        error_type text NOT NULL DEFAULT '',
        reported_at timestamptz,
        outcome text NOT NULL DEFAULT '',
        outcome_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE INDEX sends_customer_day ON eventflow.sends (customer_id, local_day)
    """,
    """
    CREATE TABLE eventflow.provider_reports (
        report_id text PRIMARY KEY,
        idempotency_key text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE eventflow.tombstones (
        customer_id text PRIMARY KEY,
        forgotten_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE eventflow.journey_events (
        id bigserial PRIMARY KEY,
        journey_id text NOT NULL,
        journey_version integer NOT NULL DEFAULT 0,
        customer_id text NOT NULL,
        workflow_id text NOT NULL,
        kind text NOT NULL,
        step_id text NOT NULL DEFAULT '',
        outcome text NOT NULL DEFAULT '',
        at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE INDEX journey_events_journey ON eventflow.journey_events (journey_id, kind)
    """,
    """
    CREATE INDEX journey_events_customer ON eventflow.journey_events (customer_id)
    """,
)

#: Every table of this revision, dropped in reverse order of creation.
_TABLES = ("journey_events", "tombstones", "provider_reports", "sends", "keyword_changes", "suppressions", "consent_audit", "consent", "address_index", "customers")


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP TABLE eventflow.{table}")
    op.execute("DROP FUNCTION eventflow.merge_fields(jsonb, jsonb)")
