"""The preferences client against a Temporal frontend that stopped answering: every failure has a reader.

Each reservation is an Update-with-Start; the SDK hands the start's failure to the operation's
workflow handle as well as raising it, so an operation nobody asks left one "Future exception was
never retrieved" per timed-out attempt (issue 23 counted about 70 in one faulty run).
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client

from activities.ledger import ReserveRequest
from devstack import Endpoints
from tests.payload_keys import session_data_converter
from tests.stalling_proxy import stalling_proxy
from tests.unretrieved import Unretrieved, unretrieved
from workflows.preferences_client import PreferencesStore

__all__ = ["unretrieved"]


async def _until(condition: object, timeout_seconds: float = 30.0) -> None:
    async def wait() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)
    await asyncio.wait_for(wait(), timeout_seconds)


@pytest.mark.timeout(60)
async def test_reservations_timing_out_on_a_stalled_server_leave_no_unread_error(
        endpoints: Endpoints, unretrieved: Unretrieved, unique: str) -> None:
    async with stalling_proxy(endpoints.temporal_address) as proxy:
        client = await Client.connect(proxy.address, data_converter=session_data_converter())
        store = PreferencesStore(client, f"q-{unique}", update_rpc_timeout_seconds=0.2)
        proxy.stall()
        reserving = asyncio.create_task(store.reserve(ReserveRequest(
            idempotency_key=f"journey:stalled:{unique}/note", customer_id=f"c-{unique}", channel="email")))
        # Timed out and asked again (same update id), twice: two operations whose start failed.
        await _until(lambda: store.retries["rpc_timeout"] >= 2)
        reserving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reserving
    assert unretrieved.messages() == []
