"""A fresh, migrated database per test module on the session's PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from store.migrate import migrate
from store.pool import create_pool


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="module")
async def store_dsn(database_url: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(database_url, name)
    await migrate(dsn)
    yield dsn
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def store_pool(store_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(store_dsn, min_size=1, max_size=8, statement_timeout_seconds=10.0,
                             command_timeout_seconds=15.0)
    yield pool
    await pool.close()
