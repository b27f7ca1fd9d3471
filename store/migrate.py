"""Applies the store's migrations (`eventflow db migrate`) and reads a database's revision.

Alembic's API is synchronous, and its environment (``migrations/env.py``) runs its own event loop
for the asyncpg dialect, so an upgrade runs in a worker thread: the caller's loop is never blocked.
"""

from __future__ import annotations

import asyncio
import threading

import asyncpg
from alembic import command

from store._alembic import alembic_config, revision_of

# Alembic's `context` and `op` are module-level proxies, set for the duration of one command: two
# upgrades in threads of one process would overwrite each other's. Processes are serialised by the
# advisory lock in ``migrations/env.py``; threads of this one by this lock.
_ALEMBIC = threading.Lock()


def _upgrade(dsn: str) -> None:
    with _ALEMBIC:
        command.upgrade(alembic_config(dsn), "head")


async def migrate(dsn: str) -> str:
    """Upgrades the database at ``dsn`` to the newest revision; idempotent.

    Concurrent callers, in this process or others, are serialised, so each revision is applied once.

    Returns:
        The database's revision afterwards (this release's head).
    """
    await asyncio.to_thread(_upgrade, dsn)
    revision = await current_revision(dsn)
    assert revision is not None, "alembic upgrade recorded no revision"
    return revision


async def current_revision(dsn: str) -> str | None:
    """The database's revision; None when no migration has run on it."""
    connection = await asyncpg.connect(dsn)
    try:
        return await revision_of(connection)
    finally:
        await connection.close()
