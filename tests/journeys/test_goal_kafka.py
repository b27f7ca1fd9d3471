"""A goal event travels Kafka -> consumer -> the running instance, which records the conversion."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from events import samples
from journeys.loader import validate_folder
from tests.harness import eventually, start_bridge
from tests.workflows.journey_harness import compile_journey
from workflows.journey import STATUS_QUERY, JourneyStatus

DEFINITION = """
id: goal_{unique}
version: 1
trigger: {{event: UserSignedUp}}
entry: {{rule: once}}
goal: {{event: PurchaseCompleted, within: 7d, filter: "payload.total.amount >= 20"}}
steps:
  - id: hello
    send: {{channel: email, template: note}}
"""


async def test_a_goal_event_on_kafka_converts_the_running_instance(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
        tmp_path: Path) -> None:
    compile_journey(tmp_path, DEFINITION.format(unique=unique))
    definitions = validate_folder(tmp_path).definitions
    customer = samples.customer()
    workflow_id = f"journey:goal_{unique}:{customer['id']}"
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                                suffix=unique, definitions=definitions)
    try:
        await bridge.publish(samples.event("UserSignedUp", customer, {"signup_source": "web",
                                                                       "marketing_opt_in": True}))
        handle = temporal_client.get_workflow_handle(workflow_id, result_type=JourneyStatus)

        async def waiting_for_goal() -> bool:
            try:
                status = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
            except RPCError:  # not started yet: the consumer has not read the event
                return False
            return status.current_step is None and not status.finished

        await eventually(waiting_for_goal, message="the instance waiting for its goal")
        await bridge.publish(samples.purchase(customer, amount="5.00"), samples.purchase(customer, amount="25.00"))
        status = await handle.result()
    finally:
        await bridge.stop()

    assert status.converted and status.finished and status.exit_reason is None
    assert status.progress.sent == ["hello"] and not status.progress.holdout
