"""Fuzzing the decoder: random and mutated bytes only ever raise a typed `DecodeError`.

``FUZZ_EXAMPLES=5000`` runs a longer campaign than the suite's bounded default.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import EventDecoder, encode_single_object, record_from_json
from events.errors import DecodeError
from events.model import Unwanted
from events.registry import RegistryWriterLookup
from events.samples import customer, event, purchase
from events.schemas import load
from tests.events import variants
from tests.events.helpers import confluent_frame, register

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _samples() -> list[dict[str, object]]:
    who = customer()
    return [
        purchase(who),
        event("SubscriptionChanged", who, {"channel": "SMS", "subscribed": False, "source": "stop_reply"}),
        event("OrderShipped", who, {"order_id": "o", "carrier": "DHL", "tracking_number": "1",
                                     "estimated_delivery_at": "2026-01-01T00:00:00Z"}),
        event("CartUpdated", who, {"cart_id": "c", "items": [], "cart_total": {"amount": "0", "currency": "EUR"}}),
    ]


@pytest.fixture(scope="module")
def fuzz_target(apicurio: str) -> tuple[EventDecoder, list[bytes]]:
    client = SchemaRegistryClient({"url": apicurio})
    schema_id = register(client, f"fuzz-{uuid.uuid4().hex[:8]}-value", variants.current())
    schemas = load()
    decoder = EventDecoder(schemas, RegistryWriterLookup(client),
                           encodings={"registry": "registry", "embedded": "embedded", "json": "json"})
    valid = [encode_single_object(record_from_json(e), schemas) for e in _samples()]
    valid += [confluent_frame(variants.current(), schema_id, e) for e in _samples()]
    for raw in valid:
        assert decoder(raw).customer.id  # the seeds themselves are valid
    return decoder, valid


def _decode_or_typed_error(decoder: EventDecoder, raw: bytes, topic: str | None) -> None:
    try:
        decoder(raw, topic=topic)
    except DecodeError as exc:
        assert exc.raw == raw
        assert exc.reason
    # Wanting nothing takes the path that peeks at the type before the body: a known type or a typed error.
    try:
        named = decoder.decode_wanted(raw, topic, wanted=frozenset())
    except DecodeError as exc:
        assert exc.raw == raw
    else:
        assert isinstance(named, Unwanted) and named.event_type in load().event_types


TOPICS = st.sampled_from([None, "registry", "embedded", "json"])


@FUZZ
@given(raw=st.binary(max_size=400), topic=TOPICS)
def test_random_bytes(fuzz_target: tuple[EventDecoder, list[bytes]], raw: bytes, topic: str | None) -> None:
    _decode_or_typed_error(fuzz_target[0], raw, topic)


@FUZZ
@given(data=st.data(), body=st.binary(max_size=400))
def test_valid_headers_with_random_bodies(fuzz_target: tuple[EventDecoder, list[bytes]], data: st.DataObject,
                                          body: bytes) -> None:
    decoder, valid = fuzz_target
    seed = data.draw(st.sampled_from(valid))
    header = seed[:10] if seed[0] == 0xC3 else seed[:5]
    _decode_or_typed_error(decoder, header + body, None)


@FUZZ
@given(data=st.data())
def test_mutated_valid_records(fuzz_target: tuple[EventDecoder, list[bytes]], data: st.DataObject) -> None:
    decoder, valid = fuzz_target
    raw = bytearray(data.draw(st.sampled_from(valid)))
    for _ in range(data.draw(st.integers(1, 6))):
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set" and raw:
            raw[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif action == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del raw[at:at + data.draw(st.integers(1, 8))]
        elif action == "truncate":
            del raw[at:]
    _decode_or_typed_error(decoder, bytes(raw), data.draw(TOPICS))


@FUZZ
@given(event_=st.fixed_dictionaries({
    "event_id": st.one_of(st.uuids().map(str), st.text(max_size=5), st.integers()),
    "event_type": st.sampled_from(["PurchaseCompleted", "ProfileUpdated", "Unknown", ""]),
    "occurred_at": st.one_of(st.just("2026-01-01T00:00:00Z"), st.text(max_size=5), st.integers(), st.none()),
    "customer": st.one_of(st.fixed_dictionaries({"id": st.text(max_size=5)}), st.none(), st.text(max_size=3)),
    "payload": st.one_of(st.fixed_dictionaries({"changed_fields": st.lists(st.text(max_size=3), max_size=3)}),
                         st.dictionaries(st.text(max_size=4), st.integers(), max_size=3), st.none()),
}))
def test_json_events(fuzz_target: tuple[EventDecoder, list[bytes]], event_: dict[str, object]) -> None:
    _decode_or_typed_error(fuzz_target[0], json.dumps(event_).encode(), "json")


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
              st.sampled_from(["1e999999999", "NaN", "-Infinity", "1e39"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12)


def _nested(value: object, depth: int, as_object: bool) -> object:
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


@FUZZ
@given(data=st.data())
def test_json_events_with_hostile_values(fuzz_target: tuple[EventDecoder, list[bytes]], data: st.DataObject) -> None:
    """Wrong types anywhere, absurd amounts and deep nesting: always a typed error, never a crash or hang."""
    event_ = purchase(customer())
    where = data.draw(st.sampled_from(["event_type", "event_id", "customer", "payload", "amount", "nested",
                                       "raw_depth"]))
    if where == "amount":
        event_["payload"]["total"] = {"amount": data.draw(JSON_VALUES), "currency": "EUR"}
    elif where == "nested":
        event_["payload"]["total"] = _nested(event_["payload"]["total"], data.draw(st.integers(1, 500)),
                                             data.draw(st.booleans()))
    elif where == "raw_depth":
        depth = data.draw(st.integers(1, 100_000))
        _decode_or_typed_error(fuzz_target[0], data.draw(st.sampled_from([b"[" * depth, b'{"a":' * depth])),
                               "json")
        return
    else:
        event_[where] = data.draw(JSON_VALUES)
    _decode_or_typed_error(fuzz_target[0], json.dumps(event_).encode(), "json")
