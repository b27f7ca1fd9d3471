"""PostgreSQL stops in the middle of a stream and comes back: nothing lost, nothing sent twice.

The test runs its own PostgreSQL server (the session's is shared by other tests), stops it once
the first purchases were sent, publishes more while it is down, waits until the consumer is seen
retrying against the missing database (the outage is observed, not timed), and starts it again.
Sends are counted at the SendGrid stub.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from consumer.dispatch import Dispatcher
from devstack.postgres import PostgresServer
from events import samples
from store import CustomerBatcher, CustomerStore, FieldCipher, PostgresLedger, create_pool, migrate
from tests.activities.journey_support import channels_for
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import Bridge, eventually, start_bridge
from workflows.worker import build_worker

__all__ = ["provider"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    server = PostgresServer(tmp_path / "postgres", port=_free_port(), persistent=True)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        server.discard_data()  # as root its data lives outside tmp_path


def _retries(bridge: Bridge) -> float:
    return sum(sample.value for metric in bridge.metrics.registry.collect() for sample in metric.samples
               if sample.name == "eventflow_retries_total")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_database_outage_mid_stream_loses_and_doubles_nothing(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        own_postgres: PostgresServer, provider: ProviderStub) -> None:
    await migrate(own_postgres.url)
    pool = await create_pool(own_postgres.url, min_size=1, max_size=6, statement_timeout_seconds=5.0,
                             command_timeout_seconds=6.0)
    store = CustomerStore(pool, FieldCipher(None))
    queue = f"test-journeys-{unique}"
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique, with_worker=False,
                                dispatcher=Dispatcher(temporal_client, queue, CustomerBatcher(store)))
    worker = build_worker(temporal_client, queue, channels_for(provider.base_url), ledger=PostgresLedger(pool),
                          contacts=store)
    try:
        async with worker:
            before = [samples.purchase(samples.customer(email=f"before-{n}@example.com")) for n in range(5)]
            await bridge.publish(*before)
            await eventually(lambda: len(provider.accepted_by_key()) == 5, timeout_seconds=60,
                             message="the purchases before the outage")

            await asyncio.to_thread(own_postgres.stop)
            during = [samples.purchase(samples.customer(email=f"during-{n}@example.com")) for n in range(5)]
            await bridge.publish(*during)
            await eventually(lambda: _retries(bridge) >= 1, timeout_seconds=60,
                             message="the consumer retrying against the stopped database")
            await asyncio.to_thread(own_postgres.start)

            await eventually(lambda: len(provider.accepted_by_key()) == 10, timeout_seconds=120,
                             message="every purchase's email after the database came back")
    finally:
        await bridge.stop()
        await pool.close()

    accepted = provider.accepted_by_key()
    assert sorted(accepted.values()) == [1] * 10, accepted
    orders = {str(event["payload"]["order_id"]) for event in [*before, *during]}
    assert {key.split("/")[0].rsplit(":", 1)[-1] for key in accepted} == orders
