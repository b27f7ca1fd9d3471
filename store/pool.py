"""The customer store's connection pool: asyncpg, with every statement bounded on the server."""

from __future__ import annotations

import asyncpg

#: How the store's sessions appear in ``pg_stat_activity``.
APPLICATION_NAME = "eventflow"


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, statement_timeout_seconds: float = 5.0,
                      command_timeout_seconds: float = 10.0) -> asyncpg.Pool:
    """Opens a pool of ``min_size`` to ``max_size`` connections to ``dsn``.

    Args:
        dsn: ``postgresql://user:password@host:port/database``.
        min_size: connections opened at once and kept.
        max_size: connections at most.
        statement_timeout_seconds: the server cancels any statement running longer
            (``statement_timeout``, set per connection, so no statement is unbounded).
        command_timeout_seconds: the client's own bound on one call; keep it above the statement
            timeout so that the server's cancel, which leaves the connection usable, comes first.
    """
    if statement_timeout_seconds <= 0:
        # PostgreSQL reads 0 as "no timeout": refuse it rather than silently unbound every statement.
        raise ValueError(f"statement_timeout_seconds must be positive, not {statement_timeout_seconds}")
    statement_timeout_ms = max(1, round(statement_timeout_seconds * 1000))
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=command_timeout_seconds, reset=_keep_session,
        server_settings={"statement_timeout": f"{statement_timeout_ms}ms", "application_name": APPLICATION_NAME},
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a released connection gets instead of asyncpg's reset query (``RESET ALL``, ``UNLISTEN *``...).

    asyncpg ends an open transaction before calling this; the store keeps no other session state
    (no ``SET``, ``LISTEN`` or cursor outlives a transaction, and the one session lock, the segment
    refresher's, is released or its connection closed before the release). The default would add a
    round trip to every release: three per send. Without it a connection that a dropped one left
    out of step with its server would go back to the pool as if healthy, so a call the database
    failed renews every pooled connection (`store.metrics.StoreMetrics.renew_connections`).
    """

