"""Journeys from files through the real consumer, Kafka and Temporal: edits while instances run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client

from events import samples
from journeys.loader import validate_folder
from journeys.model import JourneyDefinition
from tests.harness import eventually, start_bridge

DEFINITION = """
id: ship_notice
version: {version}
trigger: {{event: PurchaseCompleted}}
entry: {{rule: once_per_key, key: payload.order_id}}
steps:
  - id: confirm
    send: {{channel: email, template: notice_v{version}}}
  - id: wait_ship
    wait_for:
      event: OrderShipped
      timeout: 1h
      received:
        - id: shipped
          send: {{channel: email, template: notice_v{version}}}
"""


def _definitions(folder: Path, version: int) -> tuple[JourneyDefinition, ...]:
    (folder / "definitions").mkdir(parents=True)
    (folder / "templates").mkdir()
    (folder / "definitions" / "ship_notice.yaml").write_text(DEFINITION.format(version=version))
    template = {"id": f"notice_v{version}", "default_locale": "en", "channels": {"email": {"en": {
        "subject": f"v{version} order {{{{ payload.order_id }}}}", "body": "Hi {{ customer.first_name }}"}}}}
    (folder / "templates" / f"notice_v{version}.yaml").write_text(yaml.safe_dump(template))
    report = validate_folder(folder)
    assert report.problems == ()
    return report.definitions


def _subjects(sent: list[dict[str, Any]], order_id: str) -> list[str]:
    return [str(m["subject"]) for m in sent if str(m["workflow_id"]).endswith(f":{order_id}")]


async def test_edited_journey_applies_to_new_instances_while_old_ones_finish_on_their_version(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
        tmp_path: Path) -> None:
    customer = samples.customer(email="old@example.com")
    old_order, new_order = samples.purchase(customer), samples.purchase(customer)
    old_id, new_id = old_order["payload"]["order_id"], new_order["payload"]["order_id"]

    first = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                               suffix=unique, definitions=_definitions(tmp_path / "v1", 1))
    try:
        await first.publish(old_order)
        await eventually(lambda: _subjects(first.sent(), old_id), message="the v1 confirmation")
    finally:
        await first.stop()

    # The files change and the consumer and worker restart with version 2.
    second = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                                suffix=unique, definitions=_definitions(tmp_path / "v2", 2))
    try:
        await second.publish(new_order)
        await eventually(lambda: _subjects(second.sent(), new_id), message="the v2 confirmation")
        shipped = samples.event("OrderShipped", customer, {"order_id": old_id, "carrier": "DHL",
                                                           "tracking_number": "T-1", "estimated_delivery_at": None})
        await second.publish(shipped)
        await eventually(lambda: len(_subjects(second.sent(), old_id)) == 2, message="the old instance's shipped send")
        # The instance completes in a workflow task after its last send: wait for it while a worker runs.
        old_result = await asyncio.wait_for(temporal_client.get_workflow_handle(
            f"journey:ship_notice:{customer['id']}:{old_id}").result(), timeout=60)
    finally:
        await second.stop()
        await temporal_client.get_workflow_handle(f"journey:ship_notice:{customer['id']}:{new_id}").terminate("done")

    assert _subjects(second.sent(), old_id) == [f"v1 order {old_id}", f"v1 order {old_id}"]
    assert _subjects(second.sent(), new_id) == [f"v2 order {new_id}"]
    assert old_result["journey_version"] == 1 and [s["step_id"] for s in old_result["sends"]] == ["confirm", "shipped"]
