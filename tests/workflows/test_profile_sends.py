"""Sends address the customer's profile, resolved at send time; journey histories hold no address.

Real Kafka and Temporal, through the real consumer and worker; sends are counted at the provider stub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from activities.outcomes import SendStatus
from tests.activities.provider_stub import ProviderStub, Reply, provider
from tests.harness import eventually
from tests.workflows.profile_support import (
    decoded_history_text,
    identify,
    note_id,
    recipients,
    running,
    shipped,
    wait_id,
)
from workflows.journey import STATUS_QUERY, JourneyStatus
from workflows.preferences_client import preferences_state

__all__ = ["provider"]


async def test_a_shipping_event_without_contact_details_sends_to_the_address_and_locale_in_the_profile(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    customer = f"cust-{unique}"
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(identify(customer, 0, email="noor@example.com", first_name="Noor"),
                                 shipped(customer, 5))
        await eventually(lambda: len(provider.sends()) == 1, message="the shipping note")
        await run.bridge.publish(identify(customer, 6, locale="de"), shipped(customer, 7))
        await eventually(lambda: len(provider.sends()) == 2, message="the second shipping note")

    assert recipients(provider) == ["noor@example.com"] * 2
    first, second = sorted(provider.sends(), key=lambda sent: sent.at)
    assert "Hi Noor, dhl has order" in str(first.body["content"]), "profile.first_name is rendered"
    assert "Tier none" in str(first.body["content"])
    assert "Hallo Noor, dhl bringt" in str(second.body["content"]), "the profile's locale picks the variant"


async def test_an_email_change_between_trigger_and_send_is_honoured(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    customer = f"cust-{unique}"
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(identify(customer, 0, email="old@example.com"), shipped(customer, 5, carrier="slow"))
        handle = temporal_client.get_workflow_handle(wait_id(customer), result_type=JourneyStatus)
        await eventually(lambda: _waiting(handle), message="the journey waiting, its trigger event long handled")
        # The change is also the event the journey waits for: it sends only after the profile has it.
        await run.bridge.publish(identify(customer, 10, email="new@example.com"))
        status = await handle.result()

    assert [s.status for s in status.sends] == [SendStatus.SENT]
    assert recipients(provider) == ["new@example.com"]


async def _waiting(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        status: JourneyStatus = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
    except RPCError:  # not started yet
        return False
    return status.current_step == "wait_profile"


async def test_a_customer_without_a_contact_point_gets_no_contact_recorded_and_no_provider_call(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    customer = f"cust-{unique}"
    event = shipped(customer, 0)
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(event)
        handle = temporal_client.get_workflow_handle(note_id(customer, event), result_type=JourneyStatus)
        await eventually(lambda: _exists(temporal_client, note_id(customer, event)), message="the journey")
        status = await handle.result()
        history = await handle.fetch_history()

    assert [(s.step_id, s.status) for s in status.sends] == [("note", SendStatus.NO_CONTACT)]
    assert provider.sends() == []
    kinds = [e.event_type for e in history.events]
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED not in kinds
    (started,) = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert started.activity_task_started_event_attributes.attempt == 1, "no retry"


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError:  # not started yet
        return False
    return True


async def test_a_finished_journeys_raw_history_holds_no_email_address_or_phone_number(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    customer, email, phone = f"cust-{unique}", f"ship-{unique}@example.com", "+4915112398765"
    # The built-in envelope's way: contact details on the triggering event itself.
    event = shipped(customer, 0, email=email, phone=phone, first_name="Wren")
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(event)
        await eventually(lambda: len(provider.sends()) == 1, message="the shipping note")
        handle = temporal_client.get_workflow_handle(note_id(customer, event), result_type=JourneyStatus)
        await handle.result()
        history = await handle.fetch_history()
        profile = (await preferences_state(temporal_client, customer)).profile

    assert recipients(provider) == [email], "the address was used, read from the profile inside the activity"
    text = decoded_history_text(history.to_json())
    assert customer in text and "note" in text, "the search reads the decoded payloads"
    for secret in (email, phone, phone.lstrip("+"), "Wren"):
        assert secret not in text
    assert (profile.email, profile.phone, profile.first_name) == (email, phone, "Wren")


async def test_a_provider_rejection_quoting_the_address_leaves_no_address_in_history(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str,
        provider: ProviderStub) -> None:
    customer, email = f"cust-{unique}", f"bounce-{unique}@example.com"
    provider.reply(Reply(400, {"errors": [{"message": f"The to address {email} is not valid",
                                           "field": "personalizations.0.to.0.email"}]}))
    event = shipped(customer, 1)
    async with running(kafka_config, temporal_client, topic, tmp_path, unique, provider) as run:
        await run.bridge.publish(identify(customer, 0, email=email), event)
        await eventually(lambda: _exists(temporal_client, note_id(customer, event)), message="the journey")
        handle = temporal_client.get_workflow_handle(note_id(customer, event), result_type=JourneyStatus)
        status = await handle.result()
        history = await handle.fetch_history()

    assert [(s.status, s.error_type) for s in status.sends] == [(SendStatus.FAILED, "InvalidAddress")]
    assert len(provider.sends()) == 1
    text = decoded_history_text(history.to_json())
    assert "InvalidAddress" in text and "is not valid" in text, "the failure and its cause are in the history"
    assert email not in text
