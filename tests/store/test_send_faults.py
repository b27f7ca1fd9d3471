"""Nothing lost, nothing doubled: each crash point of a send forced, on real Temporal and PostgreSQL.

A first send worker runs in its own process and is killed at one point of an attempt; a second
worker (in this process) takes the send over. Sends are counted at the SendGrid stub by what it
accepted, per idempotency key: exactly one, every time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.metrics import SendMetrics
from activities.outcomes import DeliveryOutcome, DeliveryReport, LedgerState, SendStatus
from activities.send import NotificationActivities, SendPolicy
from devstack import Endpoints
from store.feedback import StoreFeedback
from store.ledger import PostgresLedger
from tests.activities.journey_support import channels_for, event, journey, send
from tests.activities.provider_stub import ProviderStub, Reply, provider
from tests.unretrieved import Unretrieved, unretrieved
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.queues import send_task_queue
from workflows.suppression import DeliveryFeedback
from workflows.worker import WORKFLOWS

__all__ = ["provider", "unretrieved"]

REPO = Path(__file__).resolve().parents[2]
#: Above the stub channel's 5 s call timeout plus the 2 s margin; the successor waits it out.
LEASE_SECONDS = 8.0


@asynccontextmanager
async def _first_worker(endpoints: Endpoints, queue: str, base_url: str, dsn: str, mode: str,
                        window: float) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.store.crash_sender", endpoints.temporal_address, queue, base_url, dsn, mode,
        str(LEASE_SECONDS), str(window), cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"worker-ready"
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _successor(pool: asyncpg.Pool, provider: ProviderStub, registry: CollectorRegistry,
               window: float) -> NotificationActivities:
    return NotificationActivities(channels_for(provider.base_url), ledger=PostgresLedger(pool),
                                  metrics=SendMetrics(registry), policy=SendPolicy(
                                      lease_seconds=LEASE_SECONDS, providers_reporting=frozenset({"sendgrid"}),
                                      report_window_seconds=window, report_poll_seconds=0.2))


async def _start(client: Client, queue: str, customer: str, workflow_id: str) -> WorkflowHandle[object, JourneyStatus]:
    return await client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(journey([send("note", "email")]), event(customer)),
                                       id=workflow_id, task_queue=queue, result_type=JourneyStatus)


def _resolutions(registry: CollectorRegistry) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name == "eventflow_send_uncertain":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["resolution"]] = sample.value
    return found


async def _run(endpoints: Endpoints, client: Client, pool: asyncpg.Pool, provider: ProviderStub, dsn: str,
               unique: str, mode: str, *, window: float, kill_when: bytes | None,
               before_successor: object = None) -> tuple[JourneyStatus, CollectorRegistry, str]:
    queue, customer, workflow_id = f"q-{unique}", f"c-{unique}", f"journey:fault:{unique}"
    registry = CollectorRegistry()
    async with Worker(client, task_queue=queue, workflows=list(WORKFLOWS)):
        async with _first_worker(endpoints, queue, provider.base_url, dsn, mode, window) as first:
            handle = await _start(client, queue, customer, workflow_id)
            if kill_when is not None:
                assert first.stdout is not None
                assert (await asyncio.wait_for(first.stdout.readline(), 30)).strip() == kill_when
            else:
                await asyncio.wait_for(provider.held.wait(), 30)
            first.kill()
            await first.wait()
        provider.release()
        if callable(before_successor):
            await before_successor(customer, f"{workflow_id}/note")
        async with Worker(client, task_queue=send_task_queue(queue, "email"),
                          activities=[_successor(pool, provider, registry, window).send_notification]):
            status = await asyncio.wait_for(handle.result(), 90)
    return status, registry, f"{workflow_id}/note"


@pytest.mark.timeout(150)
async def test_killed_after_the_lease_and_before_the_mark_is_sent_once(
        endpoints: Endpoints, temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str,
        provider: ProviderStub, unique: str) -> None:
    status, registry, key = await _run(endpoints, temporal_client, store_pool, provider, store_dsn, unique,
                                       "stop-before-mark", window=60.0, kill_when=b"marking")
    assert provider.accepted_by_key() == {key: 1}
    assert [record.status for record in status.sends] == [SendStatus.SENT]
    assert _resolutions(registry) == {}, "no mark: nothing was uncertain"


@pytest.mark.timeout(150)
async def test_killed_after_the_mark_and_before_the_request_is_sent_once(
        endpoints: Endpoints, temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str,
        provider: ProviderStub, unique: str) -> None:
    # No report can come for a request that never left: past the window the send goes again.
    status, registry, key = await _run(endpoints, temporal_client, store_pool, provider, store_dsn, unique,
                                       "stop-before-call", window=1.0, kill_when=b"calling")
    assert provider.accepted_by_key() == {key: 1}
    assert [record.status for record in status.sends] == [SendStatus.SENT]
    assert _resolutions(registry) == {"unreported_sent_again": 1.0}


@pytest.mark.timeout(150)
async def test_killed_after_the_request_is_settled_by_the_providers_processed_report(
        endpoints: Endpoints, temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str,
        provider: ProviderStub, unique: str) -> None:
    provider.hold()

    async def report(customer: str, key: str) -> None:
        # What `eventflow webhooks` applies for SendGrid's signed `processed` event naming the key.
        await StoreFeedback(store_pool).report(DeliveryFeedback(DeliveryReport(
            idempotency_key=key, customer_id=customer, channel="email", provider="sendgrid",
            outcome=DeliveryOutcome.ACCEPTED, at=datetime.now(UTC).isoformat(), provider_message_id="sg-1",
            report_id=f"sg-event-{key}")))

    status, registry, key = await _run(endpoints, temporal_client, store_pool, provider, store_dsn, unique, "send",
                                       window=60.0, kill_when=None, before_successor=report)
    assert provider.accepted_by_key() == {key: 1}
    assert [record.status for record in status.sends] == [SendStatus.DUPLICATE]
    assert _resolutions(registry) == {"reported_delivered": 1.0}
    row = await PostgresLedger(store_pool).send(key)
    assert row is not None and row.state is LedgerState.DELIVERED and row.provider_message_id == "sg-1"


@pytest.mark.timeout(150)
async def test_killed_after_a_refused_request_with_no_report_is_sent_again_once(
        endpoints: Endpoints, temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str,
        provider: ProviderStub, unique: str) -> None:
    # SendGrid answered 503 (it took nothing) and the answer died with the process.
    provider.reply(Reply(503))
    provider.hold(refusals=True)
    status, registry, key = await _run(endpoints, temporal_client, store_pool, provider, store_dsn, unique, "send",
                                       window=1.0, kill_when=None)
    assert provider.accepted_by_key() == {key: 1}
    assert [record.status for record in status.sends] == [SendStatus.SENT]
    assert _resolutions(registry) == {"unreported_sent_again": 1.0}


@pytest.mark.timeout(150)
async def test_a_503_storm_with_a_worker_killed_in_it_sends_each_once(
        endpoints: Endpoints, temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str,
        provider: ProviderStub, unique: str, unretrieved: Unretrieved) -> None:
    # SendGrid takes the first request, then a storm: 503 to the next ones until the script runs
    # out. The first worker's requests are all held at the stub, their answers unsent, and it is
    # killed: every send is marked called with its answer lost (uncertain).
    customers = {f"journey:storm:{unique}-{i}/note": f"c-{unique}-{i}" for i in range(3)}
    storm_after_restart = 3
    provider.reply(Reply(202), *[Reply(503, headers={"Retry-After": "1"})] * (len(customers) - 1 + storm_after_restart))
    provider.hold(refusals=True)
    queue, registry = f"q-{unique}", CollectorRegistry()
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
        async with _first_worker(endpoints, queue, provider.base_url, store_dsn, "send", 1.0) as first:
            handles = [await _start(temporal_client, queue, customer, key.removesuffix("/note"))
                       for key, customer in customers.items()]
            await asyncio.wait_for(provider.until_holding(len(customers)), 30)
            first.kill()
            await first.wait()
        provider.release()
        # What `eventflow webhooks` applies for SendGrid's signed `processed` event on the one message it took.
        feedback = StoreFeedback(store_pool)
        for key in provider.accepted_by_key():
            await feedback.report(DeliveryFeedback(DeliveryReport(
                idempotency_key=key, customer_id=customers[key], channel="email", provider="sendgrid",
                outcome=DeliveryOutcome.ACCEPTED, at=datetime.now(UTC).isoformat(), provider_message_id="sg-storm",
                report_id=f"sg-event-{key}")))
        # The restarted worker meets the rest of the storm, which ends when the stub's script does.
        async with Worker(temporal_client, task_queue=send_task_queue(queue, "email"),
                          activities=[_successor(store_pool, provider, registry, 1.0).send_notification]):
            statuses = [await asyncio.wait_for(handle.result(), 90) for handle in handles]

    assert provider.accepted_by_key() == dict.fromkeys(customers, 1), "0 missing, 0 duplicates"
    assert not provider.script, "the storm outlasted the kill"
    assert sorted(record.status for status in statuses for record in status.sends) == sorted(
        [SendStatus.DUPLICATE, SendStatus.SENT, SendStatus.SENT])
    assert _resolutions(registry) == {"reported_delivered": 1.0, "unreported_sent_again": 2.0}
    assert unretrieved.messages() == []
