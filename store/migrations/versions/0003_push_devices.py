"""Push devices: each customer's app installations and browser subscriptions, and per-device sends.

``devices`` holds many registrations per customer and push channel, the token or subscription
AES-GCM sealed like a contact field (``sealed``, key ``key_id``), named by its opaque ``device_id``
(`activities.push.device_id`). ``device_sends`` holds, under a send of the ledger, each device's
call mark and outcome, so a retried push send calls only the devices no attempt called
(docs/architecture.md, ADR-9 "Push: one send, many devices").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_UPGRADE = (
    """
    CREATE TABLE eventflow.devices (
        customer_id text NOT NULL,
        channel text NOT NULL,
        device_id text NOT NULL,
        sealed text NOT NULL,
        key_id text NOT NULL DEFAULT '',
        platform text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (customer_id, channel, device_id)
    )
    """,
    """
    CREATE TABLE eventflow.device_sends (
        idempotency_key text NOT NULL,
        device_id text NOT NULL,
        state text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        provider_message_id text,
        called_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (idempotency_key, device_id)
    )
    """,
)


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE eventflow.device_sends")
    op.execute("DROP TABLE eventflow.devices")
