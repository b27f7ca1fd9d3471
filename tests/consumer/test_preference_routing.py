"""SubscriptionChanged events reach the customer's preferences, so later journeys respect an opt-out."""

from __future__ import annotations

from temporalio.client import Client

from events import samples
from tests.harness import Bridge, eventually
from workflows.journey import STATUS_QUERY, JourneyStatus
from workflows.preferences_client import preferences_state


async def test_an_email_opt_out_on_kafka_stops_the_next_journey_email(bridge: Bridge, temporal_client: Client) -> None:
    opted_out = samples.customer()
    still_in = samples.customer()
    await bridge.publish(samples.event("SubscriptionChanged", opted_out,
                                       {"channel": "EMAIL", "subscribed": False, "source": "preference_center"}))
    await eventually(lambda: bridge.metric("eventflow_workflow_signals_total",
                                           {"journey": "preferences", "outcome": "delivered"}) == 1,
                     message="the preferences update")
    state = await preferences_state(temporal_client, opted_out["id"])
    assert state.channels["email"].subscribed is False

    blocked, allowed = samples.purchase(opted_out), samples.purchase(still_in)
    await bridge.publish(blocked, allowed)

    await eventually(lambda: any(allowed["payload"]["order_id"] in str(m["workflow_id"]) for m in bridge.sent()),
                     message="the subscribed customer's email")
    handle = temporal_client.get_workflow_handle(
        f"journey:post_purchase:{opted_out['id']}:{blocked['payload']['order_id']}")

    async def first_send() -> JourneyStatus | None:
        status = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
        return status if status.sends else None

    status = await eventually(first_send, message="the opted-out send to be recorded")
    assert status.sends[0].status != "sent"
    assert not any(blocked["payload"]["order_id"] in str(m["workflow_id"]) for m in bridge.sent())
