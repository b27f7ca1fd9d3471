"""When each customer last wrote on WhatsApp, per number: the 24-hour window for free-form messages.

One row per (customer, WhatsApp address hash): an inbound message is matched to its customers
through ``address_index`` (the number as a ``whatsapp`` address, or as an ``sms`` one: a
customer without a WhatsApp number gets WhatsApp on their phone), and the send activity asks for
the number it sends to, so a window another number of the customer opened is never taken for this one's
(activities/whatsapp.py). ``last_at`` only moves forward. Forgetting a customer deletes their rows.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
# The lead re-chains revisions when branches merge; this one needs only the first schema.
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE eventflow.whatsapp_inbound (
            customer_id text NOT NULL,
            address_hash text NOT NULL,
            last_at timestamptz NOT NULL,
            PRIMARY KEY (customer_id, address_hash)
        )
        """)


def downgrade() -> None:
    op.execute("DROP TABLE eventflow.whatsapp_inbound")
