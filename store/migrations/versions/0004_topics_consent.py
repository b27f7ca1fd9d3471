"""Preference center: single-use form nonces, and consent read by customer and topic.

``preference_forms`` records each preference form's nonce when it is submitted, so a replayed
form is refused (core/preference_links.py); a row is kept until its form would have expired
anyway, and carries no customer id (nothing to erase when a customer is forgotten). Consent itself
(per customer, channel and topic, with its audit trail) is revision 0001's ``consent`` and
``consent_audit``; the index makes the audit readable per customer and topic.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE eventflow.preference_forms (
            nonce text PRIMARY KEY,
            expires_at timestamptz NOT NULL,
            used_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX preference_forms_expiry ON eventflow.preference_forms (expires_at)")
    op.execute("CREATE INDEX consent_audit_customer_topic ON eventflow.consent_audit (customer_id, topic, id)")


def downgrade() -> None:
    op.execute("DROP INDEX eventflow.consent_audit_customer_topic")
    op.execute("DROP TABLE eventflow.preference_forms")
