"""At-least-once delivery without duplicate journeys: poison records, rebalances, per-key order, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from consumer.dead_letter import dead_letter_headers, parse_dead_letter_headers
from consumer.record import SourceRecord
from eventflow.commands.dlq_tools import read_dead_letters, replay
from events import samples
from events.producer import encode_event
from events.schemas import load as load_schemas
from journeys.model import EntryRule, JourneyDefinition, Listener
from journeys.steps import DelayStep
from tests.harness import Bridge, eventually, read_topic, start_bridge, workflow_runs


def _poison_records() -> dict[str, bytes]:
    """One record of each kind of poison, keyed by the error type it must be dead-lettered with."""
    schemas = load_schemas()
    good = encode_event(samples.purchase(samples.customer()), schemas)
    mismatched = samples.purchase(samples.customer())
    body = bytearray(encode_event(mismatched, schemas))
    return {
        "TruncatedMessageError": good[: len(good) // 2],
        "UnknownMagicByteError": b"\x7bnot avro at all",
        "UnknownSchemaError": b"\xc3\x01" + b"\x00" * 8 + good[10:],
        "InvalidEventError": bytes(body) + b"\x00\x00",
    }


async def test_each_kind_of_poison_is_dead_lettered_with_headers_and_good_events_are_handled(
        bridge: Bridge, kafka_config: dict[str, str]) -> None:
    poison = _poison_records()
    goods = [samples.purchase(samples.customer()) for _ in range(3)]
    await bridge.publish(goods[0])
    for value in poison.values():
        await bridge.publish_raw(value, key=b"poison")
    await bridge.publish(*goods[1:])

    orders = {g["payload"]["order_id"] for g in goods}
    await eventually(lambda: orders <= {str(m["workflow_id"]).rsplit(":", 1)[-1] for m in bridge.sent()},
                     message="every good event's email")
    dead = read_topic(kafka_config, f"{bridge.topic}.dlq", expected=len(poison))
    by_type = {parse_dead_letter_headers(m.headers())["error_type"]: m for m in dead}
    assert set(by_type) == set(poison)
    for error_type, value in poison.items():
        record = by_type[error_type]
        headers = parse_dead_letter_headers(record.headers())
        assert record.value() == value
        assert record.key() == b"poison"
        assert headers["source_topic"] == bridge.topic
        assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) in (0, 1, 2)
        assert headers["error_message"]


async def test_two_consumers_and_a_rebalance_mid_stream_lose_and_duplicate_nothing(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    first = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                               outbox=tmp_path / "outbox.jsonl", suffix=unique)
    second: Bridge | None = None
    events = [samples.purchase(samples.customer()) for _ in range(120)]
    try:
        for index, event in enumerate(events):
            first.producer.send(event)
            if index == 40:
                second = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                            outbox=tmp_path / "outbox.jsonl", suffix=unique, with_worker=False)
            if index == 80:
                await first.producer.flush_async()
                await first.service_stop()
            if index % 10 == 0:
                await first.producer.flush_async()
                await asyncio.sleep(0.2)
        await first.producer.flush_async()
        assert second is not None
        runs = await eventually(
            lambda: _all_started(temporal_client, first.task_queue, len(events)), timeout_seconds=60,
            message="every journey to start")
        assert all(count == 1 for count in runs.values())
        starts = sum(b.metric("eventflow_workflow_starts_total", {"journey": "post_purchase"}) for b in (first, second))
        assert starts == len(events)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


async def _all_started(client: Client, task_queue: str, expected: int) -> dict[str, int] | None:
    runs = await workflow_runs(client, task_queue)
    return runs if len(runs) >= expected else None


def _listening_journey(journey_id: str) -> JourneyDefinition:
    """A journey that waits a day and receives every CartUpdated of its customer as a signal."""
    return JourneyDefinition(
        id=journey_id, version=1, trigger_event="UserSignedUp", entry_rule=EntryRule.ONCE,
        listeners=(Listener("CartUpdated"),),
        steps=(DelayStep("wait", duration="1d"),),
    )


def _cart(customer: dict[str, object], sequence: int) -> dict[str, object]:
    return samples.event("CartUpdated", customer, {
        "cart_id": f"cart-{sequence}", "items": [],
        "cart_total": {"amount": str(sequence), "currency": "EUR"},
    })


async def test_events_of_one_key_reach_the_journey_in_offset_order(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    journey = _listening_journey(f"order-{unique}")
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique, definitions=[journey])
    try:
        customers = [samples.customer() for _ in range(4)]
        await bridge.publish(*(samples.event("UserSignedUp", c, {}) for c in customers))
        await eventually(lambda: bridge.metric("eventflow_workflow_starts_total", {"journey": journey.id}) == 4,
                         message="the four journeys")
        sent_order: dict[str, list[str]] = {c["id"]: [] for c in customers}
        for sequence in range(25):
            for customer in customers:
                cart = _cart(customer, sequence)
                sent_order[str(customer["id"])].append(str(cart["event_id"]))
                bridge.producer.send(cart)
        await bridge.producer.flush_async()
        await eventually(lambda: bridge.metric("eventflow_workflow_signals_total",
                                               {"journey": journey.id, "outcome": "delivered"}) == 100,
                         message="all signals delivered")
        for customer in customers:
            handle = temporal_client.get_workflow_handle(f"journey:{journey.id}:{customer['id']}")
            history = await handle.fetch_history()
            received = []
            for history_event in history.events:
                if history_event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                    payload = history_event.workflow_execution_signaled_event_attributes.input.payloads[0]
                    received.append(str(temporal_client.data_converter.payload_converter.from_payload(
                        payload, dict)["event_id"]))
            assert received == sent_order[str(customer["id"])]
    finally:
        await bridge.stop()


async def test_replaying_a_dead_letter_starts_its_journey_once(
        bridge: Bridge, kafka_config: dict[str, str], temporal_client: Client) -> None:
    event = samples.purchase(samples.customer())
    value = encode_event(event, load_schemas())
    dlq_topic = f"{bridge.topic}.dlq"
    from confluent_kafka import Producer

    producer = Producer(kafka_config)
    producer.produce(dlq_topic, value=value, key=b"k",
                     headers=dead_letter_headers(SourceRecord(bridge.topic, 0, 7, b"k", value),
                                                 "TemporalRejectedError", "was down"))
    producer.flush(10)

    dead = list(read_dead_letters(kafka_config, dlq_topic))
    assert len(dead) == 1 and dead[0].source_topic == bridge.topic
    assert replay(kafka_config, dead) == 1
    assert replay(kafka_config, dead) == 1

    order_id = event["payload"]["order_id"]
    await eventually(lambda: bridge.metric("eventflow_workflow_dedupes_total", {"journey": "post_purchase"}) == 1,
                     message="the second replay to dedupe")
    runs = await workflow_runs(temporal_client, bridge.task_queue)
    assert [count for wid, count in runs.items() if order_id in wid] == [1]
    sent = await eventually(lambda: [m for m in bridge.sent() if order_id in str(m["workflow_id"])],
                            message="the replayed event's email")
    assert len(sent) == 1
