"""`eventflow db import`: per-customer workflows copied into the store once, then closed; a rerun changes nothing."""

from __future__ import annotations

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from eventflow.commands.db import import_from_temporal
from events.model import Customer, CustomerEvent
from store import CustomerStore, FieldCipher
from tests.harness import eventually
from workflows.preferences import STATE_QUERY, PreferencesInput, preferences_workflow_id
from workflows.preferences_client import record_profile_update, record_subscription_change
from workflows.profile import ProfileUpdate
from workflows.worker import WORKFLOWS


async def test_import_copies_profile_and_consent_then_closes_the_workflow_and_is_idempotent(
        temporal_client: Client, store_pool: asyncpg.Pool, unique: str) -> None:
    queue, customer = f"import-{unique}", f"imp-{unique}"
    async with Worker(temporal_client, task_queue=queue, workflows=list(WORKFLOWS)):
        await record_profile_update(temporal_client, customer, ProfileUpdate(
            event_id="e-1", occurred_at="2026-11-01T10:00:00+00:00", email="imp@example.com", locale="de",
            attributes={"tier": "gold"}), queue)
        await record_subscription_change(temporal_client, CustomerEvent(
            event_id="e-2", event_type="SubscriptionChanged", occurred_at="2026-11-02T10:00:00+00:00",
            customer=Customer(id=customer), payload={"channel": "sms", "subscribed": False}), queue)
        handle = temporal_client.get_workflow_handle(preferences_workflow_id(customer))

        async def applied() -> bool:
            state = await handle.query(STATE_QUERY, result_type=PreferencesInput)
            return "sms" in state.channels and state.profile.email is not None

        await eventually(applied, message="the profile and the opt-out in the workflow")
        await eventually(lambda: _listed(temporal_client, customer), message="the workflow in visibility")
        store = CustomerStore(store_pool, FieldCipher(None))
        counts = await import_from_temporal(temporal_client, store, only_customer=customer)

    assert (counts.preferences, counts.closed, counts.failed) == (1, 1, 0)
    contact = await store.contact_points(customer)
    assert (contact.email, contact.locale, contact.attributes) == ("imp@example.com", "de", {"tier": "gold"})
    assert await store_pool.fetchval("SELECT state FROM eventflow.consent WHERE customer_id = $1 AND channel = 'sms'",
                                     customer) == "opted_out"
    assert (await handle.describe()).status is WorkflowExecutionStatus.TERMINATED

    again = await import_from_temporal(temporal_client, store, only_customer=customer)
    assert (again.preferences, again.closed) == (0, 0), "closed workflows are not imported twice"
    assert (await store.contact_points(customer)).email == "imp@example.com"


async def _listed(client: Client, customer: str) -> bool:
    query = f'WorkflowId = "{preferences_workflow_id(customer)}" AND ExecutionStatus = "Running"'
    return bool([execution async for execution in client.list_workflows(query)])
