"""Events as upstream services publish them, on the real broker, registry and Temporal server.

A shop publishes its own Avro schema (``com.shop.orders.OrderPlaced``, not in ``avro/``) through
confluent-kafka's ``AvroSerializer`` into a real Apicurio registry, and a shipping service publishes
CloudEvents made with the CloudEvents Python SDK; a source file (in the test's own journeys folder)
says how to read both, and the journeys there trigger on them through the real consumer.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from temporalio.client import Client

from consumer.dead_letter import parse_dead_letter_headers
from consumer.dispatch import Dispatcher, Outcome
from consumer.routes import Route
from events.config import build_record_decoder
from events.model import CustomerEvent
from journeys.loader import load_all
from tests.events.shop import HERE, shop_journeys
from tests.harness import Bridge, eventually, read_topic, start_bridge
from workflows.preferences_client import preferences_state


class CountingDispatcher(Dispatcher):
    """The real dispatcher, counting the Temporal calls it makes per event type."""

    calls: Counter[str]

    async def apply(self, event: CustomerEvent, action: Route) -> Outcome:
        self.calls[event.event_type] += 1
        return await super().apply(event, action)


@pytest.fixture
async def shop(kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
               apicurio: str, tmp_path: Path) -> Any:
    root = shop_journeys(tmp_path / "journeys", topic)
    dispatcher = CountingDispatcher(temporal_client, f"test-journeys-{unique}")
    dispatcher.calls = Counter()
    decoder = build_record_decoder({"EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio}, sources_file=root / "sources.yaml")
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox,
                                suffix=unique, definitions=load_all(root), decoder=decoder, dispatcher=dispatcher)
    try:
        yield bridge, dispatcher
    finally:
        await bridge.stop()


def order(order_id: str, customer_id: str, *, items: int = 3, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": customer_id, "placed_at": dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC),
            "item_count": items, "total": Decimal("120.50"), "status": "CONFIRMED",
            "buyer": {"email": f"{customer_id}@shop.example", "first_name": "Ola", "tier": "gold"},
            "request_id": uuid.UUID("7d4c9a52-6c0e-4b8e-9d38-0b4c6f1c2a11"), **extra}


def serializer(apicurio: str, schema_file: str) -> AvroSerializer:
    return AvroSerializer(SchemaRegistryClient({"url": apicurio}), (HERE / schema_file).read_text(),
                          conf={"auto.register.schemas": True})


def sent_to(bridge: Bridge, marker: str) -> list[dict[str, Any]]:
    return [m for m in bridge.sent() if marker in str(m["workflow_id"])]


async def test_third_party_avro_schema_triggers_a_journey_whose_filter_reads_its_fields_and_evolves(
        shop: tuple[Bridge, CountingDispatcher], kafka_config: dict[str, str], apicurio: str,
        temporal_client: Client, unique: str) -> None:
    bridge, dispatcher = shop
    context = SerializationContext(bridge.topic, MessageField.VALUE)
    producer = Producer(kafka_config)
    v1, v2 = serializer(apicurio, "OrderPlaced.v1.avsc"), serializer(apicurio, "OrderPlaced.v2.avsc")
    cancelled = serializer(apicurio, "OrderCancelled.avsc")
    customer_id = f"cust-{unique}"
    big, small, evolved = f"o-big-{unique}", f"o-small-{unique}", f"o-v2-{unique}"
    producer.produce(bridge.topic, key=customer_id, value=v1(order(big, customer_id), context))
    producer.produce(bridge.topic, key=customer_id, value=v1(order(small, customer_id, items=1), context))
    # The producer's next version: a field added with a default, a field removed.
    producer.produce(bridge.topic, key=customer_id,
                     value=v2(order(evolved, customer_id, sales_channel="app"), context))
    producer.produce(bridge.topic, key=customer_id, value=cancelled(
        {"order_id": big, "customer_id": customer_id, "placed_at": dt.datetime(2026, 3, 2, tzinfo=dt.UTC)}, context))
    assert producer.flush(30) == 0

    await eventually(lambda: len(sent_to(bridge, unique)) == 2, message="two order emails")
    await eventually(lambda: bridge.metric("eventflow_events_consumed_total", {
        "topic": bridge.topic, "event_type": "OrderCancelled", "outcome": "unrouted"}) == 1,
        message="the cancellation to end unrouted")
    sent = {m["workflow_id"]: m for m in sent_to(bridge, unique)}
    assert set(sent) == {f"journey:big_order:{customer_id}:{big}", f"journey:big_order:{customer_id}:{evolved}"}
    mail = sent[f"journey:big_order:{customer_id}:{big}"]
    assert mail["to"] == f"{customer_id}@shop.example"
    assert mail["subject"] == f"Order {big} received"
    assert "Hi Ola, 3 items, 120.50 in total." in str(mail["body"])
    # The filter read the third-party fields: the one-item order started nothing.
    assert bridge.metric("eventflow_events_consumed_total", {
        "topic": bridge.topic, "event_type": "OrderPlaced", "outcome": "started"}) == 2
    # A profile update and a start for each of the two orders; nothing for the filtered order or the unknown type.
    assert dispatcher.calls == Counter({"OrderPlaced": 4})
    history = await temporal_client.get_workflow_handle(f"journey:big_order:{customer_id}:{evolved}").fetch_history()
    started = json.loads(history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data)
    event = started["event"]
    assert event["source"] == "shop-orders" and event["event_id"] == evolved
    assert event["occurred_at"] == "2026-03-01T09:30:00+00:00"
    assert event["payload"]["total"] == "120.50" and event["payload"]["status"] == "CONFIRMED"
    assert event["payload"]["request_id"] == "7d4c9a52-6c0e-4b8e-9d38-0b4c6f1c2a11"
    assert event["payload"]["sales_channel"] == "app" and "gift_wrap" not in event["payload"]
    # Journeys carry no contact details: the address and the attributes are in the customer's profile.
    assert event["customer"]["email"] is None and event["customer"]["attributes"] == {}
    assert "email" not in event["payload"]["buyer"]
    profile = (await preferences_state(temporal_client, customer_id)).profile
    assert (profile.email, profile.attributes) == (f"{customer_id}@shop.example", {"tier": "gold"})


async def test_cloudevents_in_binary_and_structured_mode_each_trigger_a_journey(
        shop: tuple[Bridge, CountingDispatcher], kafka_config: dict[str, str], unique: str) -> None:
    bridge, dispatcher = shop
    producer = Producer(kafka_config)
    written = {}
    for mode, to_message in (("binary", ce_kafka.to_binary), ("structured", ce_kafka.to_structured)):
        shipment = f"s-{mode}-{unique}"
        event = CloudEvent(attributes={
            "type": "com.shop.shipping.dispatched", "source": "/shipping", "id": f"ce-{shipment}",
            "subject": f"cust-{mode}-{unique}", "time": dt.datetime(2026, 3, 3, 8, 0, tzinfo=dt.UTC),
            "datacontenttype": "application/json"},
            data={"shipment_id": shipment, "carrier": "DHL", "recipient_email": f"{mode}@ship.example"})
        message = to_message(event, JSONFormat())
        written[mode] = message
        producer.produce(bridge.topic, key=f"cust-{mode}-{unique}", value=message.value,
                         headers=list(message.headers.items()))
    other = CloudEvent(attributes={"type": "com.shop.shipping.returned", "source": "/shipping",
                                   "id": f"ce-r-{unique}", "subject": "c"}, data={"shipment_id": "x"})
    message = ce_kafka.to_binary(other, JSONFormat())
    producer.produce(bridge.topic, value=message.value, headers=list(message.headers.items()))
    assert producer.flush(30) == 0
    assert dict(written["binary"].headers)["ce_type"] == b"com.shop.shipping.dispatched"
    assert dict(written["structured"].headers)["content-type"] == b"application/cloudevents+json"

    await eventually(lambda: len(sent_to(bridge, unique)) == 2, message="both shipment emails")
    await eventually(lambda: bridge.metric("eventflow_events_consumed_total", {
        "topic": bridge.topic, "event_type": "com.shop.shipping.returned", "outcome": "unrouted"}) == 1,
        message="the unknown CloudEvents type to end unrouted")
    sent = {m["workflow_id"]: m for m in sent_to(bridge, unique)}
    for mode in ("binary", "structured"):
        mail = sent[f"journey:shipped:cust-{mode}-{unique}:s-{mode}-{unique}"]
        assert mail["to"] == f"{mode}@ship.example"
        assert mail["subject"] == f"Shipment s-{mode}-{unique} is on its way"
    assert dispatcher.calls == Counter({"ShipmentDispatched": 4})  # a profile update and a start each


def _binary(attributes: dict[str, str], data: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
    return json.dumps(data).encode(), [*headers, ("content-type", b"application/json")]


def _structured(envelope: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    return json.dumps(envelope).encode(), [("content-type", b"application/cloudevents+json")]


async def test_cloudevents_that_break_the_1_0_spec_are_dead_lettered_with_the_reason_and_start_nothing(
        shop: tuple[Bridge, CountingDispatcher], kafka_config: dict[str, str], unique: str) -> None:
    bridge, dispatcher = shop

    def attributes(case: str, **changes: str) -> dict[str, str]:
        return {"specversion": "1.0", "type": "com.shop.shipping.dispatched", "source": "/shipping",
                "id": f"ce-{case}-{unique}", "subject": f"cust-{case}-{unique}", "time": "2026-03-03T08:00:00Z",
                **changes}

    def data(case: str) -> dict[str, Any]:
        return {"shipment_id": f"s-{case}-{unique}", "carrier": "DHL", "recipient_email": f"{case}@ship.example"}

    bad = {
        "binary 2.0": _binary(attributes("b20", specversion="2.0"), data("b20")),
        "structured banana": _structured({**attributes("banana", specversion="banana"), "data": data("banana")}),
        "time": _binary(attributes("time", time="yesterday"), data("time")),
        "source": _binary(attributes("source", source="not a uri"), data("source")),
        "number": _structured({**attributes("number"), "id": 42, "data": data("number")}),
    }
    reasons = {"binary 2.0": "specversion '2.0' is not supported", "structured banana": "specversion 'banana'",
               "time": "not an RFC 3339 timestamp", "source": "not a URI-reference",
               "number": "'id' is a JSON int, not a string"}
    producer = Producer(kafka_config)
    for value, headers in bad.values():
        producer.produce(bridge.topic, key=unique, value=value, headers=list(headers))
    good_value, good_headers = _binary(attributes("good"), data("good"))
    producer.produce(bridge.topic, key=unique, value=good_value, headers=list(good_headers))
    assert producer.flush(30) == 0

    await eventually(lambda: len(sent_to(bridge, unique)) == 1, message="the valid CloudEvent's email")
    dead = read_topic(kafka_config, f"{bridge.topic}.dlq", expected=len(bad))
    found = [parse_dead_letter_headers(record.headers()) for record in dead]
    assert [h["error_type"] for h in found] == ["InvalidEventError"] * len(bad)
    for (case, reason), header in zip(reasons.items(), found, strict=True):
        assert reason in header["error_message"], (case, header["error_message"])
    assert [m["workflow_id"] for m in sent_to(bridge, unique)] == [f"journey:shipped:cust-good-{unique}:s-good-{unique}"]
    assert dispatcher.calls == Counter({"ShipmentDispatched": 2})  # the valid event's profile update and start only
