"""The whole consumer, fuzzed on the real broker: whatever is published, it stays alive and every
record ends once, handled or dead-lettered.

Hypothesis generates batches of records: Avro in both framings (valid, truncated, bit-flipped,
unknown schema ids), JSON events with wrong types, huge or invalid amounts, deep nesting and
unknown event types, and random bytes. Each batch goes through one long-running consumer (with
a real registry server for the Confluent framing); after each batch the group must have
committed past everything, every record must be counted exactly once, and every source offset
must be on the dead-letter topic at most once. ``FUZZ_EXAMPLES`` raises the number of batches.
"""

from __future__ import annotations

import functools
import io
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import schemaless_writer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from consumer.routes import EventRoutes, Route
from consumer.topics import ensure_topics
from eventflow.commands.dlq_tools import read_dead_letters
from events import samples
from events.codec import EventDecoder, encode_single_object, record_from_json
from events.model import CustomerEvent
from events.registry import RegistryWriterLookup
from events.schemas import load as load_schemas
from journeys.expressions import ExpressionError, parse
from journeys.loader import load_all
from tests.events import variants
from tests.events.helpers import register
from tests.events.registry_server import LocalRegistry
from tests.harness import Bridge, committed_behind, eventually, start_bridge

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "8")), deadline=None, phases=[Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SCHEMAS = load_schemas()
UNKNOWN_SCHEMA_ID = 987_654


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[str, int]]:
    """A registry server with the current envelope registered; yields its URL and the schema id."""
    server = LocalRegistry().start()
    try:
        schema_id = register(SchemaRegistryClient({"url": server.url}), "fuzz-value", variants.current())
        yield server.url, schema_id
    finally:
        server.stop()


@pytest.fixture
async def fuzz_bridge(kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path,
                      unique: str, registry: tuple[str, int]) -> AsyncIterator[Bridge]:
    json_topic = f"{topic}-json"
    ensure_topics(kafka_config, [json_topic], partitions=3)
    decoder = EventDecoder(SCHEMAS, RegistryWriterLookup(SchemaRegistryClient({"url": registry[0]})),
                           encodings={json_topic: "json"})
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique, decoder=decoder,
                                extra_topics=(json_topic,))
    try:
        yield bridge
    finally:
        await bridge.stop()


# -- generated events ------------------------------------------------------------------------------

WRONG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                         st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                               max_size=2))
AMOUNTS = st.one_of(st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False).map(str),
                    st.sampled_from(["1e999999999", "-1e999999999", "NaN", "Infinity", "1e39", "0.001", "x", ""]),
                    st.integers(), st.floats())


def _valid(kind: str) -> dict[str, Any]:
    who = samples.customer()
    match kind:
        case "purchase":
            return samples.purchase(who)
        case "subscription":
            return samples.event("SubscriptionChanged", who, {"channel": "SMS", "subscribed": False,
                                                               "source": "stop_reply"})
        case _:
            return samples.event("ProfileUpdated", who, {"changed_fields": ["email"]})


EVENTS = st.sampled_from(["purchase", "subscription", "profile"]).map(_valid)


def _nest(value: object, depth: int, as_object: bool) -> object:
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


@st.composite
def json_events(draw: st.DrawFn) -> bytes:
    event = draw(EVENTS)
    mutation = draw(st.sampled_from(["none", "amount", "wrong_field", "wrong_payload_field", "event_type",
                                     "deep", "missing", "deep_raw"]))
    match mutation:
        case "amount":
            event["payload"]["total"] = {"amount": draw(AMOUNTS), "currency": "EUR"}
        case "wrong_field":
            event[draw(st.sampled_from(["event_id", "event_type", "occurred_at", "customer", "payload"]))] = (
                draw(WRONG_VALUES))
        case "wrong_payload_field":
            event["payload"][draw(st.sampled_from(sorted(event["payload"]) or ["x"]))] = draw(WRONG_VALUES)
        case "event_type":
            event["event_type"] = draw(st.sampled_from(["NoSuchEvent", "", "purchasecompleted", "OrderShipped"]))
        case "deep":
            event["payload"] = _nest(event["payload"], draw(st.integers(1, 60)), draw(st.booleans()))
        case "missing":
            del event[draw(st.sampled_from(["event_id", "event_type", "occurred_at", "customer"]))]
        case "deep_raw":
            depth = draw(st.integers(100, 100_000))
            return draw(st.sampled_from([b"[" * depth, b'{"a":' * depth]))
    return json.dumps(event).encode()


def _confluent(schema_id: int, event: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    body.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(body, SCHEMAS.envelope, record_from_json(event))
    return body.getvalue()


@st.composite
def avro_records(draw: st.DrawFn, schema_id: int) -> bytes:
    event = draw(EVENTS)
    framing = draw(st.sampled_from(["embedded", "registry", "unknown_id"]))
    raw = (encode_single_object(record_from_json(event), SCHEMAS) if framing == "embedded"
           else _confluent(schema_id if framing == "registry" else UNKNOWN_SCHEMA_ID, event))
    match draw(st.sampled_from(["none", "truncate", "flip", "append"])):
        case "truncate":
            raw = raw[:draw(st.integers(0, len(raw) - 1))]
        case "flip":
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
        case "append":
            raw += draw(st.binary(min_size=1, max_size=8))
    return raw


def records(schema_id: int) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    """(which topic: ``avro`` or ``json``, value) pairs."""
    one = st.one_of(avro_records(schema_id).map(lambda v: ("avro", v)), json_events().map(lambda v: ("json", v)),
                    st.binary(max_size=64).map(lambda v: (draw_topic(v), v)))
    return st.lists(one, min_size=5, max_size=30)


def draw_topic(value: bytes) -> str:
    return "json" if len(value) % 2 else "avro"


# -- the property ------------------------------------------------------------------------------------

def _consumed(bridge: Bridge) -> float:
    return sum(s.value for m in bridge.metrics.registry.collect() for s in m.samples
               if s.name == "eventflow_events_consumed_total")


@pytest.mark.timeout(170)
@FUZZ
@given(data=st.data())
async def test_whatever_is_published_the_consumer_lives_commits_and_ends_each_record_once(
        fuzz_bridge: Bridge, kafka_config: dict[str, str], registry: tuple[str, int], unique: str,
        data: st.DataObject) -> None:
    batch = data.draw(records(registry[1]))
    bridge = fuzz_bridge
    topics = {"avro": bridge.topic, "json": f"{bridge.topic}-json"}
    before = _consumed(bridge)
    producer = Producer(kafka_config)
    for index, (which, value) in enumerate(batch):
        producer.produce(topics[which], value=value, key=str(index % 5).encode() + uuid.uuid4().bytes[:1])
    assert producer.flush(30) == 0

    await eventually(lambda: _consumed(bridge) - before >= len(batch), timeout_seconds=60,
                     message="every record to be counted")
    for topic in topics.values():
        await eventually(functools.partial(_caught_up, kafka_config, f"test-group-{unique}", topic),
                         timeout_seconds=30, message=f"commits past every record of {topic}")
    assert _consumed(bridge) - before == len(batch), "a record was counted twice"
    assert not any(task.done() for task in bridge._tasks), "the consumer (or worker) died"

    dead = list(read_dead_letters(kafka_config, f"{bridge.topic}.dlq", idle_timeout_seconds=1.0,
                                  unique_sources=False))
    sources = Counter((d.source_topic, d.source_partition, d.source_offset) for d in dead)
    assert all(count == 1 for count in sources.values()), "a record was dead-lettered twice"
    dead_lettered = sum(s.value for m in bridge.metrics.registry.collect() for s in m.samples
                        if s.name == "eventflow_events_consumed_total" and s.labels["outcome"] == "dead_lettered")
    assert len(dead) == dead_lettered


# -- generated journey expressions -------------------------------------------------------------------

OPERANDS = st.one_of(
    st.sampled_from(["payload.total", "payload.total.amount", "payload.items", "payload.order_id", "customer",
                     "customer.id", "customer.locale", "event_type", "payload.missing.deeper", "payload"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["'x'", "''", "null", "true", "false", "1e400", "-0.0", "[1, 'a']", "[]", "'NaN'", "0.1"]),
)
COMPARISONS = st.builds(lambda left, op, right: f"{left} {op} {right}", OPERANDS,
                        st.sampled_from(["==", "!=", "<", ">", "<=", ">=", "in", "not in"]), OPERANDS)
EXPRESSIONS = st.recursive(COMPARISONS, lambda inner: st.one_of(
    inner.map(lambda e: f"not ({e})"),
    st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or"]), inner)), max_leaves=6)


class SwappableRoutes(EventRoutes):
    """The consumer's router, whose trigger filters the test replaces between examples."""

    def __init__(self) -> None:
        super().__init__(load_all())
        self.current = EventRoutes(load_all())

    @property
    def event_types(self) -> frozenset[str]:
        return self.current.event_types

    def route(self, event: CustomerEvent) -> list[Route]:
        return self.current.route(event)


@pytest.fixture
async def filter_bridge(kafka_config: dict[str, str], temporal_client: Client, topic: str, tmp_path: Path,
                        unique: str) -> AsyncIterator[tuple[Bridge, SwappableRoutes]]:
    routes = SwappableRoutes()
    bridge = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                outbox=tmp_path / "outbox.jsonl", suffix=unique, router=routes, with_worker=False)
    try:
        yield bridge, routes
    finally:
        await bridge.stop()


@pytest.mark.timeout(170)
@FUZZ
@given(expression=EXPRESSIONS)
async def test_any_trigger_filter_a_journey_author_writes_never_stops_the_consumer(
        filter_bridge: tuple[Bridge, SwappableRoutes], kafka_config: dict[str, str], unique: str,
        expression: str) -> None:
    """Generated filters over real purchases: evaluation never raises, so every event is handled and committed."""
    bridge, routes = filter_bridge
    try:
        parse(expression)
    except ExpressionError:
        return  # the validator refuses it; nothing to route
    routes.current = EventRoutes([replace(d, trigger_filter=expression) for d in load_all()])
    before = _consumed(bridge)
    await bridge.publish(*(samples.purchase(samples.customer()) for _ in range(5)))

    await eventually(lambda: _consumed(bridge) - before >= 5, timeout_seconds=60, message="every event counted")
    await eventually(lambda: not committed_behind(kafka_config, f"test-group-{unique}", bridge.topic),
                     timeout_seconds=30, message="commits past every event")
    assert not any(task.done() for task in bridge._tasks), "the consumer died"
    assert _consumed(bridge) - before == 5


def _caught_up(kafka_config: dict[str, str], group: str, topic: str) -> bool:
    return not committed_behind(kafka_config, group, topic)
