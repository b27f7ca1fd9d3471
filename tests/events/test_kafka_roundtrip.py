"""On the real broker: what upstream producers write is what the consumer's decoder reads.

Records are written by confluent-kafka's own ``AvroSerializer`` against a real Apicurio Registry (with the
current, an older and a newer schema version), by `EventProducer` in registry and embedded modes,
then read back from a real topic and decoded with `events.build_decoder`, as the consumer does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from eventflow.cli import main
from events import build_decoder, build_producer
from events.codec import record_from_json
from events.producer import DeliveryError, EventProducer, SchemaNotRegisteredError
from events.registry import connect, registry_settings
from events.samples import customer, demo_events, event, purchase
from events.schemas import load
from tests.events import variants


def read_back(kafka_config: dict[str, str], topic: str, count: int, timeout_seconds: float = 30.0) -> list[Message]:
    consumer = Consumer({**kafka_config, "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_seconds
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
    return messages


def value(message: Message) -> bytes:
    raw = message.value()
    assert raw is not None
    return raw


def avro_serializer(client: SchemaRegistryClient, schema: dict[str, Any]) -> AvroSerializer:
    return AvroSerializer(client, json.dumps(schema), lambda event, _: record_from_json(event))


def test_records_from_confluents_serializer_and_evolved_schemas_decode(
        kafka_config: dict[str, str], topic: str, apicurio: str) -> None:
    environ = {"EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio, "EVENTFLOW_TOPIC_ENCODINGS": f"{topic}=registry"}
    client = SchemaRegistryClient({"url": apicurio})
    producer = Producer(kafka_config)
    context = SerializationContext(topic, MessageField.VALUE)
    who = customer(first_name="Ana")
    loyal = dict(customer(), loyalty_tier="gold")
    written = [
        ("current", purchase(who)),
        ("older", event("OrderRefunded", who, {"order_id": "o-1", "reason": "late",
                                               "amount": {"amount": "5.00", "currency": "EUR"}})),
        ("newer", event("OrderShipped", loyal, {"order_id": "o-2", "carrier": "DHL", "tracking_number": "T"})),
        ("newer", dict(purchase(loyal), payload={**purchase(loyal)["payload"], "gift": True})),
    ]
    serializers = {name: avro_serializer(client, schema) for name, schema in
                   [("current", variants.current()), ("older", variants.older()), ("newer", variants.newer())]}
    for version, sample in written:
        producer.produce(topic, key=sample["customer"]["id"], value=serializers[version](sample, context))
    assert producer.flush(30) == 0
    assert client.get_versions(f"{topic}-value") == [1, 2, 3]  # three versions under the topic's subject

    decoder = build_decoder(environ)
    decoded = {d.event_id: d for d in (decoder(value(m), topic=m.topic()) for m in read_back(kafka_config, topic, 4))}

    purchase_event = decoded[written[0][1]["event_id"]]
    assert purchase_event.payload["total"] == {"amount": "49.90", "currency": "EUR"}
    assert purchase_event.customer.first_name == "Ana"
    refund = decoded[written[1][1]["event_id"]]
    assert (refund.customer.first_name, refund.customer.locale, refund.payload["reason"]) == (None, "en", None)
    shipped = decoded[written[2][1]["event_id"]]
    assert shipped.payload["estimated_delivery_at"] is None and shipped.customer.id == loyal["id"]
    assert decoded[written[3][1]["event_id"]].event_type == "PurchaseCompleted"
    assert {value(m)[1:5] for m in read_back(kafka_config, topic, 4)} == {
        client.get_version(f"{topic}-value", v).schema_id.to_bytes(4, "big") for v in (1, 2, 3)}  # type: ignore[union-attr]  # registered just above, so present


def test_event_producer_registry_and_embedded_modes(kafka_config: dict[str, str], topic: str,
                                                    apicurio: str, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio, "EVENTFLOW_TOPIC_ENCODINGS": f"{topic}=registry"}
    with pytest.raises(SchemaNotRegisteredError, match=f"{topic}-value"):
        build_producer(kafka_config, topic, environ).send(purchase(customer()))

    monkeypatch.setenv("EVENTFLOW_SCHEMA_REGISTRY_URL", apicurio)
    monkeypatch.setenv("EVENTFLOW_TOPICS", topic)
    assert main(["schemas", "register"]) == 0
    assert f"✓ {topic}-value: schema id" in capsys.readouterr().out

    registered = build_producer(kafka_config, topic, environ)
    embedded = EventProducer(kafka_config, topic, load())
    first, second = purchase(customer()), purchase(customer())
    registered.send(first)
    embedded.send(second)
    registered.flush()
    embedded.flush()
    assert registered.schema_id == SchemaRegistryClient({"url": apicurio}).get_latest_version(f"{topic}-value").schema_id
    assert registered.delivered == 1

    messages = read_back(kafka_config, topic, 2)
    by_id = {value(m)[0]: m for m in messages}
    assert set(by_id) == {0x00, 0xC3}  # Confluent wire format and single-object encoding
    auto = build_decoder({"EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio})
    assert {auto(value(m), topic=m.topic()).event_id for m in messages} == {first["event_id"], second["event_id"]}
    assert all(m.key() == e["customer"]["id"].encode() for m, e in zip(
        sorted(messages, key=lambda m: value(m)[0]), [first, second], strict=True))


def test_delivery_failures_are_reported(kafka_config: dict[str, str], unique: str) -> None:
    topic = f"test-small-{unique}"
    admin = AdminClient(dict(kafka_config))
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "1024"})])[topic].result(30)
    producer = EventProducer(kafka_config, topic, load())
    small = event("ProfileUpdated", customer(), {"changed_fields": ["locale"]})
    big = event("ProfileUpdated", customer(), {"changed_fields": [f"field-{n:04d}" for n in range(400)]})
    producer.send(small)
    producer.flush()
    producer.send(big)
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert caught.value.event_id == big["event_id"]
    assert "too large" in caught.value.reason.lower()
    assert producer.delivered == 1
    assert producer.failures == []  # reported once


def test_registry_settings_reach_the_client(apicurio: str) -> None:
    settings = registry_settings({"EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio + "/",
                                  "EVENTFLOW_SUBJECT_NAME_STRATEGY": "topic_record"})
    assert settings is not None and settings.url == apicurio and settings.subject_strategy == "topic_record"
    assert sorted(connect(settings).get_subjects()) == sorted(SchemaRegistryClient({"url": apicurio}).get_subjects())


def test_eventflow_produce_in_registry_mode(kafka_config: dict[str, str], topic: str, apicurio: str,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, setting in {"KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
                          "EVENTFLOW_SCHEMA_REGISTRY_URL": apicurio,
                          "EVENTFLOW_TOPIC_ENCODINGS": f"{topic}=registry",
                          "EVENTFLOW_SCHEMA_REGISTRY_AUTO_REGISTER": "true"}.items():
        monkeypatch.setenv(name, setting)
    expected = len(demo_events())
    assert main(["produce", "--topic", topic]) == 0
    assert f"published {expected} events to {topic}" in capsys.readouterr().out
    decoder = build_decoder()
    messages = read_back(kafka_config, topic, expected)
    schema_id = SchemaRegistryClient({"url": apicurio}).get_latest_version(f"{topic}-value").schema_id
    assert schema_id is not None
    assert {value(m)[:5] for m in messages} == {b"\x00" + schema_id.to_bytes(4, "big")}
    assert sorted(decoder(value(m), topic=topic).event_type for m in messages) == sorted(
        str(e["event_type"]) for e in demo_events())


def test_the_documented_upstream_example_publishes_a_decodable_event(kafka_config: dict[str, str], topic: str) -> None:
    import re
    from pathlib import Path

    import structlog

    doc = (Path(__file__).resolve().parents[2] / "docs" / "publishing-events.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S)
    assert code is not None
    source = code.group(1).replace("kafka:9092", kafka_config["bootstrap.servers"]).replace("customer-events", topic)
    exec(compile(source, "publishing-events.md", "exec"), {"log": structlog.get_logger()})  # noqa: S102 - our own doc
    (message,) = read_back(kafka_config, topic, 1)
    decoded = build_decoder({})(value(message), topic=topic)
    assert (decoded.event_id, decoded.customer.id, decoded.payload["total"]) == (
        "0b0f5a6e-6b1d-4d8e-9b8a-1f2d3c4b5a69", "cust-42", {"amount": "49.90", "currency": "EUR"})
    assert message.key() == b"cust-42"


def test_send_names_an_unknown_event_type_in_one_short_line(kafka_config: dict[str, str], topic: str) -> None:
    from events.producer import InvalidRecordError, UnknownEventTypeError

    producer = EventProducer(kafka_config, topic, load())
    with pytest.raises(UnknownEventTypeError) as raised:
        producer.send({**purchase(customer()), "event_type": "PurchaseComplete"})
    assert isinstance(raised.value, InvalidRecordError)
    assert raised.value.problem.startswith("unknown event_type 'PurchaseComplete' (did you mean 'PurchaseCompleted'?); "
                                           "known: CartUpdated, CheckoutStarted, ")
    assert len(str(raised.value)) < 400


def test_the_readme_producer_snippet_runs_as_written(kafka_config: dict[str, str], topic: str) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Publishing an event (upstream services)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1).replace("kafka:9092", kafka_config["bootstrap.servers"]).replace("customer-events", topic)
    exec(compile(source, "README.md", "exec"), {})  # noqa: S102 - our own doc, with nothing injected
    # Its error path too: an event the schema refuses is logged, not a NameError.
    invalid = source.replace('"event_type": "PurchaseCompleted"', '"event_type": "PurchaseComplete"')
    assert invalid != source
    exec(compile(invalid, "README.md", "exec"), {})  # noqa: S102 - our own doc, with nothing injected
    (message,) = read_back(kafka_config, topic, 1)
    assert build_decoder({})(value(message), topic=topic).customer.id == "cust-42"
