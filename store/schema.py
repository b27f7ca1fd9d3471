"""Checks at start-up that the database's schema is the one this release's code is written against."""

from __future__ import annotations

import asyncio
import functools

import asyncpg
from alembic.script import ScriptDirectory

from store._alembic import alembic_config, revision_of
from store.errors import SchemaAheadError, SchemaOutdatedError


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def required_revision() -> str:
    """The head revision of this release's migrations: the schema its code is written against."""
    head = _scripts().get_current_head()
    assert head is not None, "store/migrations/versions holds no revision"
    return head


def _known(revision: str) -> bool:
    return revision in {script.revision for script in _scripts().walk_revisions()}


async def check_schema(pool: asyncpg.Pool) -> None:
    """Returns when the database is at `required_revision`.

    Raises:
        SchemaOutdatedError: the database is behind (or empty); `eventflow db migrate` fixes it.
        SchemaAheadError: the database is at a revision this release does not know.
    """
    # Reading the migration scripts is file IO (once per process): off the event loop.
    required = await asyncio.to_thread(required_revision)
    current = await revision_of(pool)
    if current == required:
        return
    if current is not None and not await asyncio.to_thread(_known, current):
        raise SchemaAheadError(current, required)
    raise SchemaOutdatedError(current, required)
