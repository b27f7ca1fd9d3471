"""`events.sources.SourceDecoder` record by record: fallbacks, pinned reader schemas, the cheap type path,
CloudEvents written by ``eventflow produce``, and typed errors for any input."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.record import SourceRecord
from eventflow.cli import main
from events import samples
from events.codec import EventDecoder
from events.errors import DecodeError, MissingFieldError, TruncatedMessageError
from events.model import CustomerEvent, Unwanted
from events.producer import encode_event
from events.registry import RegistryWriterLookup
from events.schemas import load as load_schemas
from events.sources import SourceDecoder, load_sources, parse_sources
from tests.events.shop import HERE
from tests.events.test_kafka_roundtrip import read_back
from tests.events.test_sources import order

SCHEMAS = load_schemas()


def decoder_for(sources: list[dict[str, Any]], tmp_path: Path, apicurio: str | None = None) -> SourceDecoder:
    lookup = RegistryWriterLookup(SchemaRegistryClient({"url": apicurio})) if apicurio else None
    return SourceDecoder(parse_sources({"sources": sources}, HERE), EventDecoder(SCHEMAS, lookup), lookup)


def record(value: bytes, *, topic: str = "shop", key: bytes | None = None, headers: tuple[Any, ...] = (),
           timestamp_ms: int | None = None, partition: int = 0, offset: int = 0) -> SourceRecord:
    return SourceRecord(topic, partition, offset, key, value, headers, timestamp_ms)


def avro_bytes(apicurio: str, schema_file: str, topic: str) -> Callable[[dict[str, Any]], bytes]:
    serializer = AvroSerializer(SchemaRegistryClient({"url": apicurio}), (HERE / schema_file).read_text(),
                                conf={"auto.register.schemas": True})
    context = SerializationContext(topic, MessageField.VALUE)
    return lambda value: bytes(serializer(value, context) or b"")


JSON_SOURCE = {"name": "plain", "topics": ["shop"], "format": "json", "type": {"field": "kind"},
               "customer_id": "key"}


def test_json_source_falls_back_to_position_key_and_record_timestamp(tmp_path: Path) -> None:
    decoder = decoder_for([JSON_SOURCE], tmp_path)
    at = int(dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
    raw = record(b'{"kind": "Ping", "n": 1}', key=b"c-7", timestamp_ms=at, partition=2, offset=17)
    event = decoder.decode_record(raw, None)
    assert isinstance(event, CustomerEvent)
    assert (event.event_id, event.event_type, event.customer.id) == ("shop/2/17", "Ping", "c-7")
    assert event.occurred_at == "2026-05-01T12:00:00+00:00" and event.payload == {"kind": "Ping", "n": 1}
    assert event.source == "plain" and not event.identify
    # The same record redelivered keeps its id; no key is a typed error, not a crash.
    assert decoder.decode_record(raw, None) == event
    with pytest.raises(MissingFieldError, match="customer id"):
        decoder.decode_record(record(b'{"kind": "Ping"}', timestamp_ms=at), None)


@pytest.mark.parametrize("topic", ["other", "shop"])  # no source for the topic; a JSON source that does not fit
def test_records_no_source_claims_are_read_as_the_envelope(tmp_path: Path, topic: str) -> None:
    decoder = decoder_for([JSON_SOURCE], tmp_path)
    sample = samples.purchase(samples.customer())
    event = decoder.decode_record(record(encode_event(sample, SCHEMAS), topic=topic), None)
    assert isinstance(event, CustomerEvent)
    assert (event.event_id, event.event_type, event.source) == (sample["event_id"], "PurchaseCompleted", "")


def test_a_pinned_reader_schema_resolves_an_evolved_writer(tmp_path: Path, apicurio: str, unique: str) -> None:
    (tmp_path / "OrderPlaced.v1.avsc").write_text((HERE / "OrderPlaced.v1.avsc").read_text())
    pinned = {"name": "orders", "topics": ["shop"], "format": "avro", "id": {"field": "order_id"},
              "customer_id": {"field": "customer_id"}, "time": {"field": "placed_at"},
              "reader_schema": "OrderPlaced.v1.avsc"}
    decoder = decoder_for([pinned], tmp_path, apicurio)
    raw = avro_bytes(apicurio, "OrderPlaced.v2.avsc", f"pinned-{unique}")(order("o-1", "c-1", sales_channel="app"))
    event = decoder.decode_record(record(raw), None)
    assert isinstance(event, CustomerEvent)
    assert event.payload["gift_wrap"] is False and "sales_channel" not in event.payload  # v1's shape
    unpinned = decoder_for([{**pinned, "reader_schema": None}], tmp_path, apicurio).decode_record(record(raw), None)
    assert isinstance(unpinned, CustomerEvent) and unpinned.payload["sales_channel"] == "app"


def test_an_unwanted_type_is_named_without_reading_the_body(tmp_path: Path, apicurio: str, unique: str) -> None:
    source = {"name": "orders", "topics": ["shop"], "format": "avro", "customer_id": {"field": "customer_id"}}
    decoder = decoder_for([source], tmp_path, apicurio)
    raw = avro_bytes(apicurio, "OrderCancelled.avsc", f"cheap-{unique}")(
        {"order_id": "o", "customer_id": "c", "placed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)})
    truncated = record(raw[:8])
    assert decoder.decode_record(truncated, {"OrderPlaced"}) == Unwanted("OrderCancelled")
    with pytest.raises(TruncatedMessageError):
        decoder.decode_record(truncated, {"OrderCancelled"})


def test_eventflow_produce_writes_cloudevents_in_both_modes_and_they_decode(
        tmp_path: Path, kafka_config: dict[str, str], topic: str, apicurio: str, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_SCHEMA_REGISTRY_URL", apicurio)
    events = tmp_path / "shipments.jsonl"
    events.write_text("".join(json.dumps({
        "id": f"ce-{n}", "source": "/shipping", "type": "com.shop.shipping.dispatched", "subject": f"cust-{n}",
        "time": "2026-03-03T08:00:00Z", "data": {"shipment_id": f"s-{n}", "carrier": "UPS",
                                                 "recipient_email": f"r{n}@ship.example"}}) + "\n" for n in (1, 2)))
    assert main(["produce", "--topic", topic, "--file", str(events), "--cloudevents", "binary",
                 "--data-schema", str(HERE / "ShipmentDispatched.avsc")]) == 0
    assert main(["produce", "--topic", topic, "--file", str(events), "--cloudevents", "structured"]) == 0
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text((HERE / "sources.yaml").read_text().replace("TOPIC", topic))
    lookup = RegistryWriterLookup(SchemaRegistryClient({"url": apicurio}))
    decoder = SourceDecoder(load_sources(sources_file), EventDecoder(SCHEMAS, lookup), lookup)
    decoded = [decoder.decode_record(SourceRecord.from_message(m), None) for m in read_back(kafka_config, topic, 4)]
    headers = [dict(m.headers() or []) for m in read_back(kafka_config, topic, 4)]
    assert [h.get("content-type") for h in headers] == [b"application/avro"] * 2 + [b"application/cloudevents+json"] * 2
    for event, n in zip(decoded, (1, 2, 1, 2), strict=True):
        assert isinstance(event, CustomerEvent)
        assert (event.event_type, event.event_id, event.customer.id, event.customer.email, event.source) == (
            "ShipmentDispatched", f"ce-{n}", f"cust-{n}", f"r{n}@ship.example", "shop-shipping")
        assert event.occurred_at == "2026-03-03T08:00:00+00:00" and event.payload["carrier"] == "UPS"


CE_SOURCE = {"name": "ce", "topics": ["shop"], "format": "cloudevents", "customer_id": "ce_subject",
             "contact": {"email": "who.email"}, "attributes": {"plan": "who.plan"}}
_header_names = st.sampled_from(["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_subject", "ce_time",
                                 "content-type", "x-other"])
_header_values = st.one_of(st.none(), st.binary(max_size=12), st.sampled_from(
    [b"1.0", b"application/json", b"application/cloudevents+json", b"application/avro", b"2026-01-01T00:00:00Z",
     b"not a time", b"\xff"]))


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.binary(max_size=64), st.sampled_from([
    b'{"specversion": "1.0", "id": "1", "type": "T", "source": "/s", "subject": "c", "data": {"who": {"email": 3}}}',
    b'{"specversion": "1.0", "id": "1", "type": "T", "source": "/s", "data_base64": "!!"}', b"[]", b'{"a": [[[]]]}',
    b"\x00\x00\x00\x00\x01\x02"])),
       headers=st.lists(st.tuples(_header_names, _header_values), max_size=6))
def test_any_record_decodes_or_raises_a_typed_error(value: bytes, headers: list[tuple[str, bytes | None]]) -> None:
    decoder = SourceDecoder(parse_sources({"sources": [CE_SOURCE, JSON_SOURCE]}, HERE), EventDecoder(SCHEMAS))
    try:
        decoded = decoder.decode_record(record(value, key=b"k", headers=tuple(headers), timestamp_ms=0), None)
    except DecodeError as exc:
        assert exc.raw == value
        return
    assert isinstance(decoded, Unwanted) or decoded.customer.id


def test_decimal_and_logical_values_become_json_safe_strings(tmp_path: Path, apicurio: str, unique: str) -> None:
    source = {"name": "orders", "topics": ["shop"], "format": "avro", "customer_id": {"field": "customer_id"},
              "time": {"field": "placed_at"}, "contact": {"email": "buyer.email"}}
    raw = avro_bytes(apicurio, "OrderPlaced.v1.avsc", f"safe-{unique}")(order("o-9", "c-9", total=Decimal("0.10")))
    event = decoder_for([source], tmp_path, apicurio).decode_record(record(raw, offset=4), None)
    assert isinstance(event, CustomerEvent)
    assert json.loads(json.dumps(event.payload)) == event.payload
    assert event.payload["total"] == "0.10" and event.payload["placed_at"] == "2026-03-01T09:30:00+00:00"
    # The address moved to the customer: it is not in the payload a second time.
    assert event.customer.email == "c-9@shop.example" and "email" not in event.payload["buyer"]
    assert event.payload["buyer"] == {"first_name": "Ola", "tier": "gold"}
    assert event.event_id == "shop/0/4"


def test_the_envelope_declared_as_a_source_names_its_identify_types(tmp_path: Path) -> None:
    envelope = {"name": "eventflow", "topics": ["customer-*"], "format": "envelope",
                "identify": ["UserSignedUp", "ProfileUpdated"], "contact_override": True}
    decoder = decoder_for([CE_SOURCE, envelope], tmp_path)
    who = samples.customer()
    signup, purchase = samples.signup(who), samples.purchase(who)
    decoded = [decoder.decode_record(record(encode_event(e, SCHEMAS), topic="customer-events"), None)
               for e in (signup, purchase)]
    assert [(e.event_type, e.source, e.identify, e.contact_override) for e in decoded if isinstance(e, CustomerEvent)] == [
        ("UserSignedUp", "eventflow", True, True), ("PurchaseCompleted", "eventflow", False, True)]
    assert decoder.decode_record(record(encode_event(purchase, SCHEMAS), topic="customer-events"),
                                 {"UserSignedUp"}) == Unwanted("PurchaseCompleted")
