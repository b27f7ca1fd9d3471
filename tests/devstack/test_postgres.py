"""The local PostgreSQL really serves: authenticated connections, a clean stop, a fresh start, no root."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import asyncpg
import pytest

from devstack import provision
from devstack.postgres import SERVER_USER, PostgresServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts_tcp(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A throw-away server of this test's own (not the session's), on a free port."""
    running = PostgresServer(tmp_path / "postgres", port=_free_port(), persistent=False)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_the_server_accepts_an_authenticated_asyncpg_connection(server: PostgresServer) -> None:
    connection = await asyncpg.connect(server.url)
    try:
        row = await connection.fetchrow(
            "SELECT current_database() AS db, current_user AS role, current_setting('server_version_num')::int AS v, "
            "current_setting('server_encoding') AS encoding, inet_server_addr()::text AS address")
    finally:
        await connection.close()
    assert row is not None
    assert (row["db"], row["role"], row["encoding"]) == ("eventflow", "eventflow", "UTF8")
    assert 170000 <= row["v"] < 180000
    assert row["address"] == "127.0.0.1/32"
    wrong = urlsplit(server.url)._replace(netloc=f"eventflow:wrong@127.0.0.1:{server.port}").geturl()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


async def test_a_stopped_server_starts_again_and_serves(server: PostgresServer) -> None:
    first_pid = server.pid

    # start and stop block until the server serves or is gone: off the event loop.
    assert await asyncio.to_thread(server.stop)
    assert not server.is_running() and not _accepts_tcp(server.port)
    await asyncio.to_thread(server.start)

    assert server.pid not in (None, first_pid)
    connection = await asyncpg.connect(server.url)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()


async def test_a_persistent_server_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "postgres", port=_free_port(), persistent=True)
    try:
        await asyncio.to_thread(server.start)
        connection = await asyncpg.connect(server.url)
        await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        await connection.close()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        connection = await asyncpg.connect(server.url)
        try:
            assert await connection.fetchval("SELECT n FROM kept") == 7
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


async def test_an_outage_of_a_throwaway_server_keeps_its_data_until_a_plain_stop(server: PostgresServer) -> None:
    # The benchmark's database-outage phase stops its non-persistent server and starts it on the same data.
    connection = await asyncpg.connect(server.url)
    await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    await connection.close()
    await asyncio.to_thread(server.stop, keep_data=True)
    await asyncio.to_thread(server.start, keep_data=True)
    connection = await asyncpg.connect(server.url)
    try:
        assert await connection.fetchval("SELECT n FROM kept") == 7
    finally:
        await connection.close()
    await asyncio.to_thread(server.stop)
    assert not server.data_dir.exists()  # a plain stop of a throw-away server still discards it


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root process has to step down to another user")
def test_root_runs_the_server_as_the_unprivileged_user(server: PostgresServer) -> None:
    assert server.pid is not None
    status = dict(line.split(":", 1) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines())
    uids = {int(uid) for uid in status["Uid"].split()}
    gids = {int(gid) for gid in status["Gid"].split()} | {int(gid) for gid in status["Groups"].split()}
    account = pwd.getpwnam(SERVER_USER)
    assert uids == {account.pw_uid} and 0 not in uids
    assert 0 not in gids, "root's groups were dropped too"
    assert server.data_dir.stat().st_uid == account.pw_uid


def test_the_pom_and_the_code_name_the_same_postgres_build() -> None:
    pom = ElementTree.parse(Path(provision.__file__).parent / "maven" / "postgres-pom.xml")
    versions = [element.text for element in pom.iter("{http://maven.apache.org/POM/4.0.0}version")]
    assert versions[-1] == provision.POSTGRES_VERSION
