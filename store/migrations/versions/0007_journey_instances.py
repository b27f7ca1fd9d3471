"""Which journey instances each customer has: the index that replaces the start's search attributes.

The consumer writes a row before it starts a journey, in the statement that checks the customer's
tombstone (one per batch), and starts the journey without search attributes: on the Temporal
server's visibility store they were the bridge's bound (docs/architecture.md, "Journey instances
in the store"). ``customers forget`` and ``journeys status`` find a customer's journeys here, and
``journeys report --version`` a version's. A row per workflow id and version: a ``one_active``
journey re-entered at the same version keeps its first row.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE eventflow.journey_instances (
            workflow_id text NOT NULL,
            journey_version integer NOT NULL,
            journey_id text NOT NULL,
            customer_id text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (workflow_id, journey_version)
        )
        """)
    op.execute("CREATE INDEX journey_instances_customer ON eventflow.journey_instances (customer_id)")
    op.execute("CREATE INDEX journey_instances_journey ON eventflow.journey_instances (journey_id, journey_version)")


def downgrade() -> None:
    op.execute("DROP TABLE eventflow.journey_instances")
