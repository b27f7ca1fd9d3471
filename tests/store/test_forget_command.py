"""`eventflow customers forget` with a customer store: the store's rows go in one transaction, a tombstone stays."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.addresses import UNKEYED
from eventflow.cli import main
from store import CustomerStore, FieldCipher
from store.customers import ProfileWrite
from store.forgetting import forget as forget_in_store
from workflows.address_book import OWNERS_QUERY, AddressContacts, AddressInput, address_workflow_id
from workflows.profile import ProfileUpdate
from workflows.tombstone import CustomerTombstone
from workflows.worker import WORKFLOW_RUNNER


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
    # Every kind of row the store keeps of a customer is counted, the anonymised ones apart.
    assert ("0 consent records, 0 consent changes, 0 sends, 0 device send marks, 0 provider reports, 0 push devices,"
            " 1 address links, 0 funnel events, 0 segment events, 0 segment memberships, 0 segment changes,"
            " 0 WhatsApp windows deleted; 0 broadcast recipients anonymised; tombstone recorded") in out
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.customers WHERE customer_id = $1", customer) == 0
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", customer) == 1
    # Nothing was known of this one anywhere: said so, nothing recorded.
    nobody = f"nobody-{unique}"
    assert await asyncio.to_thread(main, ["customers", "forget", nobody]) == 1
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", nobody) == 0


async def test_forget_with_a_store_also_removes_address_links_left_in_temporal(
        temporal_client: Client, store_pool: asyncpg.Pool, store_dsn: str, unique: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # An AddressContacts workflow from before the store (or never imported) still links the customer to
    # their number: the number is read from the store's profile before it is erased.
    customer, queue = f"linked-{unique}", f"test-forget-links-{unique}"
    phone = "+49151" + str(int(hashlib.sha256(unique.encode()).hexdigest(), 16))[:7]
    await CustomerStore(store_pool, FieldCipher(None)).apply_profile_updates([ProfileWrite(customer, ProfileUpdate(
        "e-1", "2026-11-01T00:00:00Z", phone=phone))])
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
    monkeypatch.setenv("EVENTFLOW_TASK_QUEUE", queue)
    monkeypatch.setenv("EVENTFLOW_DATABASE_URL", store_dsn)
    workflow_id = address_workflow_id("sms", UNKEYED.hash("sms", phone))
    async with Worker(temporal_client, task_queue=queue, workflow_runner=WORKFLOW_RUNNER,
                      workflows=[AddressContacts, CustomerTombstone]):
        await temporal_client.start_workflow(AddressContacts.run, AddressInput(
            "sms", UNKEYED.hash("sms", phone), [customer, "someone-else"]), id=workflow_id, task_queue=queue)

        assert await asyncio.to_thread(main, ["customers", "forget", customer]) == 0

        assert "address links removed: 1" in capsys.readouterr().out
        owners = await temporal_client.get_workflow_handle(workflow_id).query(OWNERS_QUERY, result_type=list[str])
        assert owners == ["someone-else"]


async def test_only_an_identify_newer_than_the_forget_ends_the_tombstone(store_pool: asyncpg.Pool, unique: str) -> None:
    customer = f"replayed-{unique}"
    store = CustomerStore(store_pool, FieldCipher(None))
    await store.apply_profile_updates([ProfileWrite(customer, ProfileUpdate("e-1", "2026-11-01T00:00:00Z",
                                                                            email="old@example.com"))])
    await forget_in_store(store_pool, customer)
    # A replayed record from before the forget (a dead letter, a reset offset) leaves the customer forgotten.
    assert not await store.lift_tombstone(customer, "2026-11-01T00:00:00Z")
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", customer) == 1
    assert await store.lift_tombstone(customer, datetime.now(UTC).isoformat())
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1", customer) == 0
