"""The store's schema revisions, oldest first (Alembic reads them by path; nothing imports them)."""
