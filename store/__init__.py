"""The customer store in PostgreSQL: profiles, consent, suppressions, tombstones, push devices and the send ledger.

The tables are described in ``store/migrations/versions/`` and docs/architecture.md (ADR-10);
``eventflow db migrate`` applies them, and a process refuses a schema older than it needs.
"""

from store.customers import CustomerBatcher, CustomerStore, FieldCipher
from store.devices import StoreDevices
from store.errors import SchemaAheadError, SchemaOutdatedError, StoreError
from store.ledger import PostgresLedger
from store.metrics import StatementKind, StoreMetrics
from store.migrate import current_revision, migrate
from store.opening import database_check, open_store
from store.pool import create_pool
from store.schema import check_schema, required_revision

__all__ = [
    "CustomerBatcher",
    "CustomerStore",
    "FieldCipher",
    "PostgresLedger",
    "SchemaAheadError",
    "SchemaOutdatedError",
    "StatementKind",
    "StoreError",
    "StoreDevices",
    "StoreMetrics",
    "check_schema",
    "create_pool",
    "current_revision",
    "database_check",
    "migrate",
    "open_store",
    "required_revision",
]
