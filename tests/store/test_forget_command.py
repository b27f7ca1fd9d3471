"""`eventflow customers forget` with a customer store: the store's rows go in one transaction, a tombstone stays."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from temporalio.client import Client

from eventflow.cli import main
from store import CustomerStore, FieldCipher
from store.customers import ProfileWrite
from workflows.profile import ProfileUpdate


async def test_forget_erases_the_store_and_leaves_a_tombstone(
        temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str, unique: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    customer = f"erase-{unique}"
    store = CustomerStore(store_pool, FieldCipher(None))
    await store.apply_profile_updates([ProfileWrite(customer, ProfileUpdate(
        "e-1", "2026-11-01T00:00:00Z", email="erase@example.com", first_name="Eve"))])
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
    monkeypatch.setenv("EVENTFLOW_TASK_QUEUE", f"test-forget-{unique}")
    monkeypatch.setenv("EVENTFLOW_DATABASE_URL", store_dsn)

    assert await asyncio.to_thread(main, ["customers", "forget", customer]) == 0

    out = capsys.readouterr().out
    assert f"customer {customer} forgotten" in out
    assert "customer store: profile fields email, first_name;" in out and "erase@example.com" not in out
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.customers WHERE customer_id = $1", customer) == 0
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", customer) == 1
    # Nothing was known of this one anywhere: said so, nothing recorded.
    nobody = f"nobody-{unique}"
    assert await asyncio.to_thread(main, ["customers", "forget", nobody]) == 1
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", nobody) == 0
