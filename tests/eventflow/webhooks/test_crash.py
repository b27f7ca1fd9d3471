"""The receiver killed between receiving a report and handing it on loses nothing, and the retry counts once.

The race is forced, not waited for: the receiver process runs with a hook that stops each request
after its records are queued in the producer and before the flush; the test SIGKILLs it there.
The provider saw no 2xx, so it retries against a fresh receiver, which is accepted; a second
retry (the provider missed the answer) is accepted too and still changes the ledger once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.activities.journey_support import event, journey, run_journey, send
from tests.activities.provider_stub import ProviderStub
from tests.eventflow.webhooks.conftest import FeedbackStack, free_port
from tests.eventflow.webhooks.signing import sendgrid_body, sendgrid_event
from tests.harness import eventually
from workflows.preferences_client import preferences_state

REPO = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def _receiver(stack: FeedbackStack, port: int, *, hold: bool) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.eventflow.webhooks.crash_webhooks", stack.kafka_config["bootstrap.servers"], stack.topic,
        stack.signer.verification_key, str(port), "1" if hold else "0", cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        await asyncio.wait_for(_line(process, b"ready"), 30)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _line(process: asyncio.subprocess.Process, wanted: bytes) -> None:
    """Reads the process's output (its logs too) up to the line ``wanted``."""
    assert process.stdout is not None
    while (line := await process.stdout.readline()) and line.strip() != wanted:
        pass
    assert line.strip() == wanted, f"the process ended before saying {wanted!r}"


@pytest.mark.timeout(60)
async def test_a_receiver_killed_before_the_flush_loses_nothing_and_the_retry_counts_once(
        feedback_stack: FeedbackStack, provider: ProviderStub, unique: str) -> None:
    stack, customer, workflow_id = feedback_stack, f"c-{unique}", f"journey:crash:{unique}"
    await run_journey(stack.client, stack.queue, journey([send("note", "email")]), event(customer), workflow_id)
    args = provider.sends()[0].body["custom_args"]
    body = sendgrid_body([sendgrid_event("delivered", args, event_id=f"d-{unique}")])
    port = free_port()
    url = f"http://127.0.0.1:{port}/sendgrid/events"

    async with _receiver(stack, port, hold=True) as doomed, aiohttp.ClientSession() as http:
        assert doomed.stdout is not None
        attempt = asyncio.create_task(http.post(url, data=body, headers=stack.signer.headers(body)))
        await asyncio.wait_for(_line(doomed, b"held"), 20)
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        with pytest.raises(aiohttp.ClientError):
            await attempt  # the provider got no answer, so it will retry

    async with _receiver(stack, port, hold=False), aiohttp.ClientSession() as http:
        for _ in range(2):  # the retry, and a retry of the retry
            async with http.post(url, data=body, headers=stack.signer.headers(body)) as response:
                assert response.status == 200

    key = f"{workflow_id}/note"

    async def applied() -> bool:
        entry = (await preferences_state(stack.client, customer)).ledger[key]
        return entry.outcome == "delivered"

    await eventually(applied, message="the retried report applied")
    # Every record that reached the topic has been applied once the consumer has read to its end.
    records = stack.records()
    assert records >= 2  # both accepted retries are on the topic (the killed one may be too)
    await eventually(lambda: _consumed(stack, records), message="the topic read to its end")
    entry = (await preferences_state(stack.client, customer)).ledger[key]
    assert (entry.outcome, entry.reports) == ("delivered", 1)


def _consumed(stack: FeedbackStack, records: int) -> bool:
    return stack.sample("eventflow_feedback_records_total", kind="report", result="applied") >= records
