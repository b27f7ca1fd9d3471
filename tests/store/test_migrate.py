"""Migrations build the schema on an empty database, are idempotent, and the start-up check names the fix."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from store import (
    SchemaAheadError,
    SchemaOutdatedError,
    check_schema,
    create_pool,
    current_revision,
    migrate,
    required_revision,
)
from store._alembic import MIGRATION_LOCK_KEY, alembic_config

REPO = Path(__file__).resolve().parents[2]
TABLES = {"alembic_version", "customers", "address_index", "consent", "consent_audit", "suppressions",
          "keyword_changes", "sends", "provider_reports", "tombstones", "journey_events", "preference_forms",
          "customer_events", "segment_members", "segment_changes", "broadcasts", "broadcast_recipients",
          "whatsapp_inbound", "devices", "device_sends", "journey_instances"}


async def _tables(dsn: str) -> set[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                                      "eventflow")
    finally:
        await connection.close()
    return {row["table_name"] for row in rows}


async def test_migrate_creates_the_tables_on_a_fresh_database(fresh_database_url: str) -> None:
    assert await current_revision(fresh_database_url) is None

    revision = await migrate(fresh_database_url)

    assert revision == required_revision() == await current_revision(fresh_database_url)
    assert await _tables(fresh_database_url) == TABLES
    connection = await asyncpg.connect(fresh_database_url)
    try:
        indexes = {row["indexname"] for row in await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'eventflow'")}
        assert {"sends_customer_day", "address_index_customer", "journey_events_journey"} <= indexes
        merged = await connection.fetchval(
            "SELECT eventflow.merge_fields($1::jsonb, $2::jsonb)::text",
            '{"email": {"v": "old", "t": "2026-01-02T00:00:00.000000+00:00", "e": "b"}}',
            '{"email": {"v": "older", "t": "2026-01-01T00:00:00.000000+00:00", "e": "z"},'
            ' "locale": {"v": "de", "t": "2026-01-01T00:00:00.000000+00:00", "e": "z"}}')
        assert '"old"' in merged and '"older"' not in merged and '"de"' in merged, merged
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(
                "INSERT INTO eventflow.sends (idempotency_key, customer_id, channel, state, local_day)"
                " VALUES ('k', 'c', 'sms', 'sent', now()::date)")
    finally:
        await connection.close()


async def test_migrate_takes_a_dsn_with_libpq_tls_options(fresh_database_url: str) -> None:
    # docs/deploy.md puts sslmode (and sslrootcert) in EVENTFLOW_DATABASE_URL; the hook Job's
    # `eventflow db migrate` must read it as the processes' pools do. The test server has no TLS: disable.
    dsn = f"{fresh_database_url}?sslmode=disable&sslrootcert=/nonexistent/ca.crt"

    assert await migrate(dsn) == required_revision()
    assert await _tables(fresh_database_url) == TABLES


async def test_migrating_twice_is_a_no_op(fresh_database_url: str) -> None:
    first = await migrate(fresh_database_url)
    connection = await asyncpg.connect(fresh_database_url)
    try:
        await connection.execute("INSERT INTO eventflow.tombstones VALUES ('c-2', now())")

        again = await migrate(fresh_database_url)

        assert again == first
        assert await connection.fetchval("SELECT count(*) FROM eventflow.tombstones") == 1
        assert await connection.fetchval("SELECT count(*) FROM eventflow.alembic_version") == 1
    finally:
        await connection.close()


async def test_concurrent_migrations_wait_for_each_other_and_apply_each_revision_once(
        fresh_database_url: str) -> None:
    """Two other processes and two tasks of this one, all released at the same moment."""
    holder = await asyncpg.connect(fresh_database_url)
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    script = "import asyncio, sys; from store import migrate; print(asyncio.run(migrate(sys.argv[1])))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [await asyncio.create_subprocess_exec(sys.executable, "-c", script, fresh_database_url, env=env,
                                                      stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                 for _ in range(2)]
    here = asyncio.gather(migrate(fresh_database_url), migrate(fresh_database_url))
    try:
        # Both processes and one task of this process (the other waits in this process's own lock).
        for _ in range(300):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            if waiting == 3:
                break
            await asyncio.sleep(0.1)
        assert waiting == 3, "every migration run waits for the migration lock"
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        await holder.close()

    outputs = [await process.communicate() for process in processes]
    revisions = await here

    assert [process.returncode for process in processes] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert {out.decode().strip() for out, _ in outputs} | set(revisions) == {required_revision()}
    assert await _tables(fresh_database_url) == TABLES


async def test_check_schema_names_the_migrate_command_on_an_unmigrated_database(fresh_database_url: str) -> None:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        with pytest.raises(SchemaOutdatedError) as raised:
            await check_schema(pool)
        assert raised.value.current is None and raised.value.required == required_revision()
        assert str(raised.value) == (f"database schema is at (none), this release needs {required_revision()}: "
                                     "run `eventflow db migrate`")

        await migrate(fresh_database_url)

        await check_schema(pool)
    finally:
        await pool.close()


async def test_check_schema_refuses_a_revision_this_release_does_not_know(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        await pool.execute("UPDATE eventflow.alembic_version SET version_num = '9999'")
        with pytest.raises(SchemaAheadError) as raised:
            await check_schema(pool)
        assert raised.value.current == "9999"
        assert "eventflow db migrate" not in str(raised.value), "migrating cannot fix a newer schema"
    finally:
        await pool.close()


async def test_the_downgrade_removes_what_the_upgrade_made(fresh_database_url: str) -> None:
    await migrate(fresh_database_url)

    await asyncio.to_thread(command.downgrade, alembic_config(fresh_database_url), "base")

    assert await _tables(fresh_database_url) == {"alembic_version"}
    assert await current_revision(fresh_database_url) is None
    assert await migrate(fresh_database_url) == required_revision()
