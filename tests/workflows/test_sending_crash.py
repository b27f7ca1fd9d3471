"""A worker killed while the provider holds its request; another worker finishes: one provider call."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from devstack import Endpoints
from tests.activities.journey_support import channels_for, event, journey, send, worker
from tests.activities.provider_stub import ProviderStub, provider
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences_client import preferences_state

__all__ = ["provider"]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
async def test_worker_killed_during_a_send_does_not_send_twice(endpoints: Endpoints, temporal_client: Client,
                                                               provider: ProviderStub, unique: str) -> None:
    queue, customer, workflow_id = f"q-{unique}", f"c-{unique}", f"journey:test:{unique}"
    provider.hold()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.activities.crash_worker", endpoints.temporal_address, queue, provider.base_url,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"worker-ready"
        handle = await temporal_client.start_workflow(
            JOURNEY_WORKFLOW, JourneyInput(journey([send("nudge", "sms")]), event(customer)),
            id=workflow_id, task_queue=queue, result_type=JourneyStatus)
        await asyncio.wait_for(provider.held.wait(), 30)  # Twilio accepted the message; the reply is held
        process.kill()
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    provider.release()

    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        status = await asyncio.wait_for(handle.result(), 60)
        ledger = (await preferences_state(temporal_client, customer)).ledger[f"{workflow_id}/nudge"]

    [record] = status.sends
    assert len(provider.sends()) == 1
    assert record.status == "duplicate"
    assert record.provider_message_id == provider.messages[0]["sid"]
    assert any(r.method == "GET" for r in provider.requests)  # the second worker asked Twilio first
    assert (ledger.state, ledger.attempts) == ("delivered", 2)
