"""The pool bounds every statement on the server and takes its bounds from the settings."""

from __future__ import annotations

import asyncpg
import pytest
from pydantic import SecretStr

from core.settings import DatabaseSettings
from store import create_pool, open_store


async def test_a_statement_longer_than_the_timeout_is_cancelled_by_the_server(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, statement_timeout_seconds=0.2,
                             command_timeout_seconds=5.0)
    try:
        assert await pool.fetchval("SHOW statement_timeout") == "200ms"
        assert await pool.fetchval("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()") \
            == "eventflow"
        with pytest.raises(asyncpg.QueryCanceledError):
            await pool.execute("SELECT pg_sleep(2)")
        assert await pool.fetchval("SELECT 1") == 1, "the connection stays usable after the server's cancel"
    finally:
        await pool.close()


async def test_the_store_opens_with_the_settings_bounds(database_url: str) -> None:
    settings = DatabaseSettings(url=SecretStr(database_url), pool_min_size=0, pool_max_size=3,
                                statement_timeout_seconds=1.5)
    pool = await open_store(settings, check=False)
    assert pool is not None
    try:
        assert (pool.get_min_size(), pool.get_max_size()) == (0, 3)
        assert await pool.fetchval("SHOW statement_timeout") == "1500ms"
    finally:
        await pool.close()


async def test_no_url_no_store_and_no_unbounded_statements() -> None:
    assert await open_store(DatabaseSettings()) is None
    with pytest.raises(ValueError, match="statement_timeout_seconds must be positive"):
        await create_pool("postgresql://127.0.0.1:1/none", statement_timeout_seconds=0)


async def test_a_release_ends_the_transaction_without_a_reset_round_trip(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS pool_release_probe (n int)")
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'probe'")  # session state a reset would undo
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO pool_release_probe VALUES (1)")
        async with pool.acquire() as conn:  # the pool's only connection, again
            assert await conn.fetchval("SHOW application_name") == "probe"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_release_probe") == 0, "the open transaction rolled back"
    finally:
        await pool.execute("DROP TABLE IF EXISTS pool_release_probe")
        await pool.close()
