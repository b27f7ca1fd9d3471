"""The customer store in PostgreSQL: profiles, consent, suppressions, tombstones and the send ledger."""

from store.customers import CustomerBatcher, CustomerStore, FieldCipher
from store.ledger import PostgresLedger
from store.opening import database_check, open_store

__all__ = ["CustomerBatcher", "CustomerStore", "FieldCipher", "PostgresLedger", "database_check", "open_store"]
