"""One provider request per notification, forced through the races that broke it: a stalled attempt past
its heartbeat timeout, a worker killed mid-send, slow and rejected ledger Updates, a hot customer.

Sends are counted at the provider stub, by idempotency key, never at the outbox.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.ledger import ReserveRequest
from activities.metrics import SendMetrics
from activities.outcomes import LedgerState, SendStatus
from activities.send import NotificationActivities, SendPolicy
from devstack import Endpoints
from tests.activities.journey_support import channels_for, event, journey, send
from tests.activities.provider_stub import ProviderStub, provider
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences import CustomerPreferences
from workflows.preferences_client import PreferencesStore, preferences_state
from workflows.queues import send_task_queue
from workflows.worker import WORKFLOWS, build_worker

__all__ = ["provider"]

REPO = Path(__file__).resolve().parents[2]
#: Longer than the send's heartbeat timeout (10 s) plus one activity task swallowed by the frozen
#: worker's open poll, so the second attempt always meets the first one's lease.
LEASE_SECONDS = 40.0


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def _worker_process(endpoints: Endpoints, queue: str, base_url: str,
                          lease_seconds: float = LEASE_SECONDS) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.activities.crash_worker", endpoints.temporal_address, queue, base_url,
        str(lease_seconds), cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"worker-ready"
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()


def _sends(client: Client, queue: str, provider: ProviderStub, registry: CollectorRegistry) -> NotificationActivities:
    return NotificationActivities(channels_for(provider.base_url), metrics=SendMetrics(registry),
                                  ledger=PreferencesStore(client, queue), policy=SendPolicy(lease_seconds=LEASE_SECONDS))


async def _start(client: Client, queue: str, customer: str, workflow_id: str, step_options: dict[str, object]
                 ) -> WorkflowHandle[object, JourneyStatus]:
    return await client.start_workflow(
        JOURNEY_WORKFLOW, JourneyInput(journey([send("note", "email", **step_options)]), event(customer)),
        id=workflow_id, task_queue=queue, result_type=JourneyStatus)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_an_attempt_stalled_past_its_heartbeat_timeout_is_fenced_out(
        endpoints: Endpoints, temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    """Attempt 1 freezes (SIGSTOP) while SendGrid holds its request; Temporal starts attempt 2 elsewhere.

    Attempt 2 must wait out attempt 1's lease instead of sending again (SendGrid cannot be asked
    what arrived); attempt 1 wakes, gets its answer and records the delivery.
    """
    queue, customer, workflow_id = f"q-{unique}", f"c-{unique}", f"journey:stall:{unique}"
    provider.hold()
    registry = CollectorRegistry()
    sends = _sends(temporal_client, queue, provider, registry)
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)), \
            _worker_process(endpoints, queue, provider.base_url) as first:
        handle = await _start(temporal_client, queue, customer, workflow_id, {})
        await asyncio.wait_for(provider.held.wait(), 30)  # SendGrid has the request; its reply is held
        first.send_signal(signal.SIGSTOP)
        async with Worker(temporal_client, task_queue=send_task_queue(queue, "email"),
                          activities=[sends.send_notification]):
            # Past the heartbeat timeout Temporal gives the send to this worker, which finds the lease held.
            await _until(lambda: _sample(registry, "eventflow_send_lease_waits_total", channel="email") >= 1, 120)
            # The reply goes out first and waits in the frozen process's socket, so on waking its
            # read finds it instead of timing out (which would make the delivery uncertain).
            provider.release()
            await asyncio.sleep(0.5)
            first.send_signal(signal.SIGCONT)
            status = await asyncio.wait_for(handle.result(), 60)
        ledger = (await preferences_state(temporal_client, customer)).ledger[f"{workflow_id}/note"]

    assert provider.sends_by_key() == {f"{workflow_id}/note": 1}
    [record] = status.sends
    assert record.status == SendStatus.DUPLICATE
    assert ledger.state is LedgerState.DELIVERED


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_worker_killed_mid_send_is_not_sent_again_where_the_provider_cannot_tell(
        endpoints: Endpoints, temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    """The true crash window on SendGrid: the policy (at most once) holds and the outcome is counted."""
    queue, customer, workflow_id = f"q-{unique}", f"c-{unique}", f"journey:kill:{unique}"
    provider.hold()
    registry = CollectorRegistry()
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
        # A killed process leaves no poll open, so a short lease suffices: the successor waits it out.
        async with _worker_process(endpoints, queue, provider.base_url, lease_seconds=15) as first:
            handle = await _start(temporal_client, queue, customer, workflow_id, {})
            await asyncio.wait_for(provider.held.wait(), 30)
            first.kill()
            await first.wait()
        provider.release()
        async with Worker(temporal_client, task_queue=send_task_queue(queue, "email"),
                          activities=[_sends(temporal_client, queue, provider, registry).send_notification]):
            status = await asyncio.wait_for(handle.result(), 90)

    assert provider.sends_by_key() == {f"{workflow_id}/note": 1}
    [record] = status.sends
    assert record.status == SendStatus.UNCERTAIN
    assert _sample(registry, "eventflow_send_uncertain_total", channel="email", provider="sendgrid",
                   resolution="not_sent_again") == 1


@pytest.mark.timeout(120)
async def test_slow_ledger_updates_are_asked_again_and_applied_once(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    """No worker serves the ledger at first, so reservations time out; the send still happens once."""
    queue, ledger_queue, customer = f"q-{unique}", f"ledger-{unique}", f"c-{unique}"
    store = PreferencesStore(temporal_client, ledger_queue, update_rpc_timeout_seconds=1.0)
    async with build_worker(temporal_client, queue, channels_for(provider.base_url), ledger=store):
        handle = await _start(temporal_client, queue, customer, f"journey:slow:{unique}", {})
        await _until(lambda: store.retries["rpc_timeout"] >= 2)
        async with Worker(temporal_client, task_queue=ledger_queue, workflows=[CustomerPreferences]):
            status = await asyncio.wait_for(handle.result(), 60)
            ledger = (await preferences_state(temporal_client, customer)).ledger[f"journey:slow:{unique}/note"]

    assert provider.sends_by_key() == {f"journey:slow:{unique}/note": 1}
    assert [r.status for r in status.sends] == [SendStatus.SENT]
    assert (ledger.state, ledger.attempts) == (LedgerState.DELIVERED, 1)


@pytest.mark.parametrize("updates_per_customer", [4, 40], ids=["gated", "server-rejects"])
@pytest.mark.timeout(150)
async def test_a_hot_customer_gets_exactly_the_cap(
        temporal_client: Client, provider: ProviderStub, unique: str, updates_per_customer: int) -> None:
    """50 journeys of one customer send at once under a daily cap of 3: 3 sent, 47 capped, nothing twice.

    Gated, this process never has more than 4 Updates in flight on the customer's workflow, so the
    server's limit of 10 is never hit; ungated, the server rejects some and they are asked again.
    """
    queue, customer = f"q-{unique}", f"c-{unique}"
    store = PreferencesStore(temporal_client, queue, max_updates_per_customer=updates_per_customer)
    async with build_worker(temporal_client, queue, channels_for(provider.base_url), ledger=store):
        handles = await asyncio.gather(*(
            _start(temporal_client, queue, customer, f"journey:hot{i}:{unique}", {"daily_cap": 3})
            for i in range(50)))
        statuses = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)

    outcomes = sorted(record.status for status in statuses for record in status.sends)
    assert outcomes == sorted([SendStatus.SENT] * 3 + [SendStatus.CAPPED] * 47)
    assert len(provider.sends()) == 3
    assert set(provider.sends_by_key().values()) == {1}
    if updates_per_customer <= 4:
        assert store.retries["server_busy"] == 0


@pytest.mark.timeout(60)
async def test_a_cancelled_reservation_stops_instead_of_asking_again(temporal_client: Client, unique: str) -> None:
    """The SDK reports a cancelled Update with the same error as a timed-out one: cancellation must win.

    Otherwise a worker stopping (or an attempt Temporal cancelled) would keep asking forever.
    """
    store = PreferencesStore(temporal_client, f"ledger-nobody-{unique}", update_rpc_timeout_seconds=30.0)
    reserving = asyncio.create_task(store.reserve(ReserveRequest(
        idempotency_key=f"journey:x:{unique}/a", customer_id=f"c-{unique}", channel="email", attempt=1,
        lease_seconds=LEASE_SECONDS)))
    await asyncio.sleep(1.0)  # the Update is in flight: no worker serves that ledger queue
    reserving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reserving, 20)
    assert store.retries["rpc_timeout"] == 0
