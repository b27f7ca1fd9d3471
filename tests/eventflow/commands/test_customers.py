"""``eventflow customers forget``: nothing readable is left, later events start nothing until an identify.

Real Kafka and Temporal, through the real consumer and worker; sends are counted at the provider stub.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from eventflow.cli import main
from eventflow.commands.customers import InvalidCustomerIdError, forget_customer
from events import samples
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import Bridge, eventually
from tests.workflows.profile_support import identify, note_id, recipients, running, shipped, wait_id
from workflows.journey import STATUS_QUERY, JourneyStatus
from workflows.preferences import preferences_workflow_id
from workflows.preferences_client import preferences_state
from workflows.tombstone import tombstone_workflow_id

__all__ = ["provider"]


async def _gone(client: Client, workflow_id: str) -> bool:
    """Whether no history of the workflow can be read any more."""
    try:
        await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as err:
        return err.status is RPCStatusCode.NOT_FOUND
    return False


async def _waiting(client: Client, workflow_id: str) -> bool:
    try:
        status = await client.get_workflow_handle(workflow_id).query(STATUS_QUERY, result_type=JourneyStatus)
    except RPCError:
        return False
    return status.current_step == "wait_profile"


async def _visible(client: Client, customer_id: str) -> bool:
    return [w.id async for w in client.list_workflows(f"CustomerId = '{customer_id}'")] != []


async def test_forget_leaves_nothing_readable_and_later_events_start_nothing_until_an_identify(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    customer = f"cust-{unique}"
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(identify(customer, 0, email="gone@example.com", first_name="Ines"),
                                 shipped(customer, 1, carrier="slow"))
        await eventually(lambda: _waiting(temporal_client, wait_id(customer)), message="the waiting journey")
        await eventually(lambda: _visible(temporal_client, customer), message="the journey in visibility")

        report = await forget_customer(temporal_client, customer_id=customer, task_queue=run.bridge.task_queue)

        assert report.journeys_ended == [wait_id(customer)]
        assert report.profile_fields == ["email", "first_name"]
        assert report.executions_deleted >= 2 and not report.deletion_refused
        await eventually(lambda: _gone(temporal_client, wait_id(customer)), message="the journey's history deleted")
        await eventually(lambda: _gone(temporal_client, preferences_workflow_id(customer)),
                         message="the profile and preferences deleted")

        # Forgotten: a non-identify event (even one with contact details) starts and records nothing, nor
        # does a replayed identify from before the forget (a dead letter replayed, an offset reset)...
        ignored = shipped(customer, 2, phone="+4915112300000")
        replayed = identify(customer, 0, email="gone@example.com")
        # ...until an identify event newer than the forget, after which the next event works again.
        back = {**identify(customer, 3, email="back@example.com"), "occurred_at": samples.now_iso()}
        welcome_back = shipped(customer, 4)
        consumed = _consumed(run.bridge)
        await run.bridge.publish(ignored, replayed)
        await eventually(lambda: _consumed(run.bridge) >= consumed + 2, message="the two records handled")
        tombstone = await temporal_client.get_workflow_handle(tombstone_workflow_id(customer)).describe()
        assert tombstone.status is WorkflowExecutionStatus.RUNNING, "the replayed identify did not end the tombstone"
        await run.bridge.publish(back, welcome_back)
        await eventually(lambda: len(provider.sends()) == 1, message="the note after the new identify")
        state = await preferences_state(temporal_client, customer)
        assert not await _exists(temporal_client, note_id(customer, ignored)), "the forgotten event started nothing"
        tombstone = await temporal_client.get_workflow_handle(tombstone_workflow_id(customer)).describe()
        assert tombstone.status is WorkflowExecutionStatus.TERMINATED, "the identify ended the tombstone"

        # Running it again is safe, and the command prints what it did.
        monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
        monkeypatch.setenv("EVENTFLOW_TASK_QUEUE", run.bridge.task_queue)
        assert await asyncio.to_thread(main, ["customers", "forget", customer]) == 0

    assert recipients(provider) == ["back@example.com"]
    assert (state.profile.email, state.profile.phone) == ("back@example.com", None)
    out = capsys.readouterr().out
    assert f"customer {customer} forgotten" in out and "profile deleted: fields email" in out
    assert "back@example.com" not in out, "the report names fields, never values"
    tombstone = await temporal_client.get_workflow_handle(tombstone_workflow_id(customer)).describe()
    assert tombstone.status is WorkflowExecutionStatus.RUNNING, "forgotten again"


def _consumed(bridge: Bridge) -> float:
    return sum(sample.value for metric in bridge.metrics.registry.collect() for sample in metric.samples
               if sample.name == "eventflow_events_consumed_total")


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_an_empty_id_is_refused(temporal_client: Client) -> None:
    with pytest.raises(InvalidCustomerIdError):
        await forget_customer(temporal_client, customer_id="", task_queue="unused")


async def test_every_id_the_consumer_accepts_can_be_forgotten_and_only_that_customer_is(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    # Quotes, a backslash, a double quote, an injection attempt; and a bystander whose id is what the
    # server's quote stripping would turn the first id into.
    odd = [f"'{unique}'", f"x' OR CustomerId != '{unique}", f'back\\slash"{unique}', f"tab\t{unique}"]
    bystander = unique
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(*(shipped(customer, 1, carrier="slow") for customer in [*odd, bystander]))
        for customer in [*odd, bystander]:
            await eventually(functools.partial(_waiting, temporal_client, wait_id(customer)), message=f"{customer!r} waiting")
        await eventually(lambda: _visible(temporal_client, bystander), message="the bystander in visibility")
        for customer in odd:
            await eventually(functools.partial(_listed, temporal_client, run.bridge.task_queue, wait_id(customer)), message=f"{customer!r} listed")

        for customer in odd:
            report = await forget_customer(temporal_client, customer_id=customer, task_queue=run.bridge.task_queue)
            assert report.journeys_ended == [wait_id(customer)], customer
            assert report.executions_deleted >= 1, report
        for customer in odd:
            await eventually(functools.partial(_gone, temporal_client, wait_id(customer)), message=f"{customer!r} deleted")
            await eventually(functools.partial(_gone, temporal_client, preferences_workflow_id(customer)),
                             message=f"{customer!r} preferences deleted")
        assert await _waiting(temporal_client, wait_id(bystander)), "the bystander's journey runs on"


async def _listed(client: Client, task_queue: str, workflow_id: str) -> bool:
    return [w.id async for w in client.list_workflows(f"TaskQueue = '{task_queue}'") if w.id == workflow_id] != []


async def test_an_unknown_id_is_said_to_be_unknown_and_gets_no_tombstone_unless_asked(
        temporal_client: Client, unique: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = f"cust-nobody-{unique}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
    monkeypatch.setenv("EVENTFLOW_TASK_QUEUE", f"test-forget-{unique}")

    assert await asyncio.to_thread(main, ["customers", "forget", nobody]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"customer {nobody} is unknown: no journeys, profile, preferences or tombstone; nothing deleted and no "
        "tombstone left (--tombstone-unknown leaves one, so later events for this id start nothing)"]
    assert not await _exists(temporal_client, tombstone_workflow_id(nobody))

    assert await asyncio.to_thread(main, ["customers", "forget", nobody, "--tombstone-unknown"]) == 0
    assert f"customer {nobody} forgotten" in capsys.readouterr().out
    try:
        assert await _exists(temporal_client, tombstone_workflow_id(nobody))
        # Known now (its tombstone): forgetting it again is the usual, safe repeat.
        assert await asyncio.to_thread(main, ["customers", "forget", nobody]) == 0
    finally:
        await temporal_client.get_workflow_handle(tombstone_workflow_id(nobody)).terminate("test done")
