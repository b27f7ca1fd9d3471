"""Session-wide real servers and the per-test pieces built on them.

Kafka and Temporal are real: the servers named by ``KAFKA_BOOTSTRAP_SERVERS`` and
``TEMPORAL_ADDRESS`` when both are set, otherwise the test stack (``devstack.Stack.for_tests``),
started once per session and stopped at the end if this session started it.

PostgreSQL is real too: the server named by ``EVENTFLOW_DATABASE_URL`` when it is set (its role
needs CREATEDB: each test that wants a database gets a fresh one), otherwise the test stack's own,
started on its own, so tests that need only the database do not start Kafka and Temporal.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from confluent_kafka.admin import AdminClient
from hypothesis import settings as hypothesis_settings
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import DatabaseSettings
from devstack import Endpoints, Stack
from devstack.provision import TEST_SERVER_STARTUP, test_server
from devstack.registry import start_registry
from tests.harness import Bridge, start_bridge
from tests.payload_keys import session_data_converter

# The gate (`make test`, CI) checks the same generated examples on every run, so a landing cannot
# fail on a counterexample nobody has seen yet; HYPOTHESIS_PROFILE=explore draws new ones.
hypothesis_settings.register_profile("gate", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The session's PostgreSQL server: ``EVENTFLOW_DATABASE_URL``, else the test stack's (started if need be)."""
    configured = DatabaseSettings.load().dsn()
    if configured is not None:
        yield configured
        return
    server = Stack.for_tests().postgres
    assert server is not None
    already_running = server.is_running()
    server.start()
    yield server.url
    if not already_running:
        server.stop()


@pytest.fixture(scope="session")
def endpoints(database_url: str) -> Iterator[Endpoints]:
    kafka, temporal = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("TEMPORAL_ADDRESS")
    if kafka and temporal:
        yield Endpoints(kafka, temporal, database_url=database_url)
        return
    stack = Stack.for_tests(postgres=False)  # `database_url` owns the database server
    already_running = stack.is_running()
    yield replace(stack.up(), database_url=database_url)
    if not already_running:
        stack.down()


@pytest.fixture
async def fresh_database_url(database_url: str, unique: str) -> AsyncIterator[str]:
    """A new, empty database on the session's server for one test (dropped after it); its DSN."""
    name = f"test_{unique}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def apicurio() -> Iterator[str]:
    """A real, in-memory Apicurio Registry (Confluent-compatible API) for this session; subjects are per test.

    Provisioned from Maven Central by `devstack.registry`; the event-contract tests and the schema
    commands' tests share it.
    """
    server = start_registry()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_config(endpoints: Endpoints) -> dict[str, str]:
    return {"bootstrap.servers": endpoints.kafka_bootstrap_servers}


@pytest.fixture(scope="session")
async def temporal_client(endpoints: Endpoints) -> Client:
    return await Client.connect(endpoints.temporal_address, data_converter=session_data_converter())


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's Java test server with time-skipping, shared by every test that needs it."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server()), test_server_startup_timeout=TEST_SERVER_STARTUP)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, groups, task queues and ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic(kafka_config: dict[str, str], unique: str) -> str:
    """A fresh three-partition topic (with its dead-letter topic) for one test."""
    from consumer.topics import ensure_topics

    name = f"test-events-{unique}"
    ensure_topics(kafka_config, [name, f"{name}.dlq"], partitions=3)
    return name


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.jsonl"


@pytest.fixture
async def bridge(kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path,
                 unique: str) -> AsyncIterator[Bridge]:
    """A worker and a consumer on this test's topic, task queue and outbox, running in this loop."""
    running = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                 outbox=outbox, suffix=unique)
    try:
        yield running
    finally:
        await running.stop()


def admin(kafka_config: dict[str, str]) -> AdminClient:
    return AdminClient(dict(kafka_config))


__all__ = ["asyncio", "admin"]
