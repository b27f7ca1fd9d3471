"""The customer store: profiles, contact points, consent, suppressions and the send ledger in PostgreSQL.

This is the skeleton: the connection pool (`create_pool`), the schema's migrations (`migrate`, run
by `eventflow db migrate`) and the start-up check that the database is at the revision this
release needs (`check_schema`). The tables are described in ``store/migrations/versions/``.
"""

from store.errors import SchemaAheadError, SchemaOutdatedError, StoreError
from store.migrate import current_revision, migrate
from store.pool import create_pool, pool_from_settings
from store.schema import check_schema, required_revision

__all__ = [
    "SchemaAheadError",
    "SchemaOutdatedError",
    "StoreError",
    "check_schema",
    "create_pool",
    "current_revision",
    "migrate",
    "pool_from_settings",
    "required_revision",
]
