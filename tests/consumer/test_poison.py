"""Nothing a publisher or a journey does stops the consumer: the failures reported in the field, on real servers.

Each test publishes poison between good events on one key (so a frozen key or partition would
hold the good events back) and asserts: good events handled, each poison record dead-lettered
exactly once with its bytes and reason, and the group's commits past every record.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.client import Client

from consumer.dead_letter import parse_dead_letter_headers
from consumer.dispatch import Dispatcher, Outcome
from consumer.routes import EventRoutes, Route
from events import samples
from events.codec import EventDecoder
from events.model import CustomerEvent
from events.schemas import load as load_schemas
from journeys.loader import load_all
from tests.harness import committed_behind, eventually, read_topic, start_bridge


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def _emailed(sent: list[dict[str, Any]]) -> set[str]:
    return {str(m["workflow_id"]).rsplit(":", 1)[-1] for m in sent}


async def test_json_poison_is_dead_lettered_once_and_the_partition_keeps_committing(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique,
                                decoder=EventDecoder(load_schemas(), encodings={topic: "json"}))
    try:
        who = samples.customer()
        bad_type = samples.purchase(who)
        bad_type["event_type"] = ["PurchaseCompleted"]
        huge = samples.purchase(who)
        huge["payload"]["total"] = {"amount": "1e999999999", "currency": "EUR"}
        poison = [b"[" * 100_000, b'{"a":' * 50_000, _json(bad_type), _json(huge)]
        goods = [samples.purchase(who) for _ in range(2)]
        key = str(who["id"]).encode()
        await bridge.publish_raw(_json(goods[0]), key)
        for value in poison:
            await bridge.publish_raw(value, key)
        await bridge.publish_raw(_json(goods[1]), key)

        orders = {g["payload"]["order_id"] for g in goods}
        await eventually(lambda: orders <= _emailed(bridge.sent()), message="both good events' emails")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits past every record")
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=len(poison) + 1, timeout_seconds=5)
        assert sorted(m.value() or b"" for m in dead) == sorted(poison)
        assert {parse_dead_letter_headers(m.headers())["error_type"] for m in dead} == {"InvalidEventError"}
        assert all(parse_dead_letter_headers(m.headers())["error_message"] for m in dead)
        assert bridge.metric("eventflow_dead_letters_total", {"topic": topic, "error_type": "InvalidEventError"}) == 4
    finally:
        await bridge.stop()


class _ExplodingFilter(EventRoutes):
    """Routing that raises for some events, as the filter ``payload.total in customer`` did."""

    def route(self, event: CustomerEvent) -> list[Route]:
        if str(event.payload.get("order_id", "")).startswith("boom"):
            raise TypeError("unhashable type: 'dict'")
        return super().route(event)


async def test_an_exception_while_routing_dead_letters_the_event_and_the_consumer_goes_on(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique,
                                router=_ExplodingFilter(load_all()))
    try:
        who = samples.customer()
        booms = [samples.purchase(who, order_id=f"boom-{i}") for i in range(3)]
        goods = [samples.purchase(who) for _ in range(3)]
        await bridge.publish(goods[0], booms[0], booms[1], goods[1], booms[2], goods[2])

        await eventually(lambda: {g["payload"]["order_id"] for g in goods} <= _emailed(bridge.sent()),
                         message="every good event's email")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits past every record")
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=len(booms) + 1, timeout_seconds=5)
        headers = [parse_dead_letter_headers(m.headers()) for m in dead]
        assert Counter(h["error_type"] for h in headers) == {"TypeError": 3}
        assert all("route raised TypeError: unhashable type" in h["error_message"] for h in headers)
        assert len({h["source_offset"] for h in headers}) == 3
        assert bridge.metric("eventflow_unexpected_failures_total", {"stage": "route"}) == 3
    finally:
        await bridge.stop()


def _set_max_message_bytes(kafka_config: dict[str, str], topic: str, value: int) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)])
    admin = AdminClient(dict(kafka_config))  # held: a collected client cancels its futures
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


async def test_a_failing_dead_letter_topic_is_retried_visibly_and_the_record_written_once(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    _set_max_message_bytes(kafka_config, f"{topic}.dlq", 1000)
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique, stall_after_seconds=1.0)
    try:
        poison = b"\x7b" + b"x" * 3000  # the broker refuses it on the dead-letter topic
        good = samples.purchase(samples.customer())
        await bridge.publish_raw(poison, b"k")
        await eventually(lambda: bridge.metric("eventflow_retries_total", {"operation": "dead_letter"}) >= 2,
                         message="dead-letter retries")
        ready, reason = bridge.service.readiness()
        assert not ready and "retrying dead_letter for" in reason and "Message size too large" in reason
        await eventually(lambda: bridge.metric("eventflow_stalled_partitions") == 1, timeout_seconds=30,
                         message="the stalled partition to be counted")
        assert bridge.metric("eventflow_records_retrying", {"operation": "dead_letter"}) == 1

        _set_max_message_bytes(kafka_config, f"{topic}.dlq", 1_000_000)
        await bridge.publish(good)
        await eventually(lambda: good["payload"]["order_id"] in _emailed(bridge.sent()), timeout_seconds=60,
                         message="the good event after the dead-letter topic recovered")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits past every record")
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=2, timeout_seconds=5)
        assert [m.value() for m in dead] == [poison]
        assert bridge.service.readiness() == (True, "polling")
        assert bridge.metric("eventflow_records_retrying", {"operation": "dead_letter"}) == 0
    finally:
        await bridge.stop()


class _SurprisingDispatcher(Dispatcher):
    """Temporal calls that fail in ways nobody planned for: a bug for some events, a full buffer for others."""

    def __init__(self, client: Client, task_queue: str) -> None:
        super().__init__(client, task_queue)
        self.buffer_errors = 3

    async def apply(self, event: CustomerEvent, action: Route) -> Outcome:
        order_id = str(event.payload.get("order_id", ""))
        if order_id.startswith("bug"):
            raise ValueError(f"no version in snapshot for {order_id}")
        if order_id.startswith("busy") and self.buffer_errors > 0:
            self.buffer_errors -= 1
            raise BufferError("Local: Queue full")
        return await super().apply(event, action)


async def test_unexpected_dispatch_exceptions_never_freeze_a_partition(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path, unique: str) -> None:
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique,
                                dispatcher=_SurprisingDispatcher(temporal_client, f"test-journeys-{unique}"))
    try:
        who = samples.customer()
        bugs = [samples.purchase(who, order_id=f"bug-{i}") for i in range(2)]
        busy = samples.purchase(who, order_id="busy-1")
        goods = [samples.purchase(who) for _ in range(2)]
        await bridge.publish(bugs[0], goods[0], busy, bugs[1], goods[1])

        expected = {g["payload"]["order_id"] for g in goods} | {"busy-1"}
        await eventually(lambda: expected <= _emailed(bridge.sent()), message="the good and the retried events")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits past every record")
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=len(bugs) + 1, timeout_seconds=5)
        headers = [parse_dead_letter_headers(m.headers()) for m in dead]
        assert sorted(h["error_type"] for h in headers) == ["ValueError", "ValueError"]
        assert all("dispatch raised ValueError: no version in snapshot for bug-" in h["error_message"]
                   for h in headers)
        assert bridge.metric("eventflow_retries_total", {"operation": "temporal"}) == 3
        await eventually(lambda: bridge.metric("eventflow_events_in_flight") == 0, message="every slot released")
    finally:
        await bridge.stop()


async def test_without_a_dead_letter_topic_offsets_commit_and_the_first_poison_creates_it(
        kafka_config: dict[str, str], temporal_client: Client, tmp_path: Path, unique: str) -> None:
    from consumer.topics import ensure_topics

    topic = f"test-events-nodlq-{unique}"
    ensure_topics(kafka_config, [topic], partitions=3)
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique)
    try:
        good = samples.purchase(samples.customer())
        await bridge.publish(good)
        await eventually(lambda: good["payload"]["order_id"] in _emailed(bridge.sent()), message="the email")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits although no dead-letter topic exists")

        await bridge.publish_raw(b"\x7bpoison", b"k")
        await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", topic),
                         message="commits past the poison")
        dead = read_topic(kafka_config, f"{topic}.dlq", expected=2, timeout_seconds=5)
        assert [m.value() for m in dead] == [b"\x7bpoison"]
    finally:
        await bridge.stop()
