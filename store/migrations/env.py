"""Alembic's environment for the customer store: online migrations over SQLAlchemy's asyncpg dialect.

`store.migrate.migrate` runs it in a worker thread, which has no event loop of its own, so this
file may start one. The DSN comes in ``config.attributes`` (`store._alembic.alembic_config`).
An upgrade is one transaction (PostgreSQL's DDL is transactional) that first takes an advisory lock,
so processes migrating at once (several pods starting) apply each revision exactly once.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from store._alembic import DSN_ATTRIBUTE, MIGRATION_LOCK_KEY, SCHEMA


def _upgrade(connection: Connection) -> None:
    context.configure(connection=connection, version_table_schema=SCHEMA)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        # The version table lives in the store's schema, so the schema exists before Alembic reads it.
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        context.run_migrations()


async def _run_online(dsn: str) -> None:
    # asyncpg reads the DSN itself, as the processes' pools do: its query options are libpq's
    # (``sslmode``, ``sslrootcert``...), which SQLAlchemy would pass to ``asyncpg.connect`` as keyword
    # arguments it does not take, so a TLS DSN would fail here only. NullPool: one connection, closed with the run.
    engine = create_async_engine("postgresql+asyncpg://", poolclass=pool.NullPool,
                                 async_creator=lambda: asyncpg.connect(dsn))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the customer store's migrations run online only (`eventflow db migrate`), not with --sql")
asyncio.run(_run_online(context.config.attributes[DSN_ATTRIBUTE]))
