"""The first end-to-end path on the real broker and server: event in, one notification out."""

from __future__ import annotations

from confluent_kafka import Message
from temporalio.client import Client

from consumer.dead_letter import parse_dead_letter_headers
from events import samples
from tests.harness import Bridge, eventually, read_topic


def _sent_for(bridge: Bridge, order_id: str) -> list[dict[str, object]]:
    return [m for m in bridge.sent() if order_id in str(m["workflow_id"])]


async def test_purchase_event_sends_one_thank_you_email(bridge: Bridge, temporal_client: Client) -> None:
    customer = samples.customer(locale="en", first_name="Dana", email="dana@example.com")
    event = samples.purchase(customer, amount="12.50")
    order_id = event["payload"]["order_id"]

    await bridge.publish(event)

    sent = await eventually(lambda: _sent_for(bridge, order_id), message="the thank-you email")
    assert len(sent) == 1
    assert sent[0]["channel"] == "email"
    assert sent[0]["to"] == "dana@example.com"
    assert sent[0]["subject"] == f"Thank you for your order {order_id}"
    assert "12.50 EUR" in str(sent[0]["body"]) and "Dana" in str(sent[0]["body"])
    workflow_id = f"journey:post_purchase:{customer['id']}:{order_id}"
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == "Journey"
    assert bridge.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) == 1


async def test_duplicate_event_starts_one_workflow_and_sends_once(bridge: Bridge, temporal_client: Client) -> None:
    customer = samples.customer()
    event = samples.purchase(customer)
    order_id = event["payload"]["order_id"]

    await bridge.publish(event, event)

    await eventually(lambda: bridge.metric("eventflow_workflow_dedupes_total", {"journey": "post_purchase"}) == 1,
                     message="the second delivery to be counted as a dedupe")
    await eventually(lambda: _sent_for(bridge, order_id), message="the email")
    assert bridge.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) == 1
    runs = [w async for w in temporal_client.list_workflows(
        f"WorkflowId = 'journey:post_purchase:{customer['id']}:{order_id}'")]
    assert len(runs) == 1
    assert len(_sent_for(bridge, order_id)) == 1


async def test_not_avro_record_is_dead_lettered_and_the_next_event_is_handled(
        bridge: Bridge, kafka_config: dict[str, str]) -> None:
    customer = samples.customer()
    good = samples.purchase(customer)
    key = customer["id"].encode()

    await bridge.publish_raw(b'{"this": "is json, not avro"}', key=key)
    await bridge.publish(good)

    await eventually(lambda: _sent_for(bridge, good["payload"]["order_id"]), message="the good event's email")
    dead: list[Message] = read_topic(kafka_config, f"{bridge.topic}.dlq", expected=1)
    assert len(dead) == 1
    assert dead[0].value() == b'{"this": "is json, not avro"}'
    assert dead[0].key() == key
    headers = parse_dead_letter_headers(dead[0].headers())
    assert headers["error_type"] == "UnknownMagicByteError"
    assert headers["source_topic"] == bridge.topic
    assert bridge.metric("eventflow_dead_letters_total",
                         {"topic": bridge.topic, "error_type": "UnknownMagicByteError"}) == 1
