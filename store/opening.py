"""Opening the customer store for a process: a bounded pool, the schema check, the readiness check."""

from __future__ import annotations

import asyncpg

from core.http import ReadinessCheck
from core.settings import DatabaseSettings
from store.pool import create_pool
from store.schema import check_schema


async def open_store(settings: DatabaseSettings, *, check: bool = True) -> asyncpg.Pool | None:
    """A connection pool on the configured database, or None when no database is configured.

    Every statement is bounded by the server-side ``statement_timeout``; the pool never holds more
    than ``pool_max_size`` connections (callers wait for a free one).

    Raises:
        SchemaOutdatedError: ``check`` and the database's schema is older than this release needs
            (its message names ``eventflow db migrate``).
    """
    dsn = settings.dsn()
    if dsn is None:
        return None
    pool = await create_pool(dsn, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                             statement_timeout_seconds=settings.statement_timeout_seconds,
                             command_timeout_seconds=settings.statement_timeout_seconds + 1.0)
    if check:
        try:
            await check_schema(pool)
        except BaseException:
            await pool.close()
            raise
    return pool


def database_check(pool: asyncpg.Pool) -> ReadinessCheck:
    """Ready when the database answers a trivial statement."""

    async def check() -> tuple[bool, str]:
        await pool.fetchval("SELECT 1")
        return True, "ok"

    return check
