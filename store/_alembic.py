"""Where the migrations live, the schema they own and how a database's revision is read.

Alembic is configured in code, not by an ini file: the DSN travels in ``Config.attributes`` so a
password never passes through ConfigParser interpolation or a file.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic.config import Config

#: The PostgreSQL schema holding the store's tables and Alembic's version table.
SCHEMA = "eventflow"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The key of ``Config.attributes`` that carries the DSN to ``migrations/env.py``.
DSN_ATTRIBUTE = "dsn"
#: The advisory lock every migration run holds (any fixed 64-bit number; this one spells "evflowdb").
MIGRATION_LOCK_KEY = 0x6576_666C_6F77_6462


def alembic_config(dsn: str | None = None) -> Config:
    """An Alembic configuration for the store's migrations (and the database at ``dsn``, when given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if dsn is not None:
        config.attributes[DSN_ATTRIBUTE] = dsn
    return config


async def revision_of(database: asyncpg.Pool | asyncpg.Connection) -> str | None:
    """The revision recorded in the database's version table; None before the first migration."""
    table = f"{SCHEMA}.alembic_version"
    if not await database.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return None
    revision = await database.fetchval(f"SELECT version_num FROM {table}")
    return str(revision) if revision is not None else None
