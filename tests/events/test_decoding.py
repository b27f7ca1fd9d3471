"""Every kind of bad input lands as its typed error; evolved schemas decode (real Apicurio registry)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from core.errors import ConfigError
from events import build_decoder
from events.codec import EventDecoder, encode_single_object, record_from_json
from events.errors import (
    DecodeError,
    InvalidEventError,
    MissingFieldError,
    RegistryUnavailableError,
    SchemaResolutionError,
    TruncatedMessageError,
    UnknownEventTypeError,
    UnknownMagicByteError,
    UnknownSchemaError,
)
from events.model import CustomerEvent, Unwanted
from events.registry import RegistryWriterLookup
from events.samples import customer, event, purchase
from events.schemas import load
from tests.events import variants
from tests.events.helpers import confluent_frame, register, single_object_frame
from tests.events.registry_server import LocalRegistry


@pytest.fixture
def client(apicurio: str) -> SchemaRegistryClient:
    """A client of the real registry."""
    return SchemaRegistryClient({"url": apicurio})


@pytest.fixture
def subject() -> str:
    return f"test-{uuid.uuid4().hex[:8]}-value"


def decoder_for(url: str, **encodings: str) -> EventDecoder:
    """The consumer's decoder for a registry at ``url``."""
    environ = {"EVENTFLOW_SCHEMA_REGISTRY_URL": url,
               "EVENTFLOW_TOPIC_ENCODINGS": ",".join(f"{t}={e}" for t, e in encodings.items())}
    return build_decoder(environ)


def test_registry_framed_events_decode_and_the_registry_is_asked_once_per_id(
        registry: LocalRegistry, subject: str) -> None:
    schema_id = register(SchemaRegistryClient({"url": registry.url}), subject, variants.current())
    decoder = decoder_for(registry.url, orders="registry")
    events = [purchase(customer(), amount=f"{n}.50") for n in range(1, 4)]
    decoded = [decoder(confluent_frame(variants.current(), schema_id, e), topic="orders") for e in events]
    assert [d.payload["total"] for d in decoded] == [{"amount": f"{n}.50", "currency": "EUR"} for n in range(1, 4)]
    assert [d.event_id for d in decoded] == [e["event_id"] for e in events]
    assert registry.schema_fetches(schema_id) == 1


def test_older_and_newer_writers_resolve_against_the_reader(
        apicurio: str, client: SchemaRegistryClient, subject: str) -> None:
    old_id = register(client, subject, variants.older())
    new_id = register(client, subject, variants.newer())
    decoder = decoder_for(apicurio)
    refund = event("OrderRefunded", customer(first_name="Ana"), {"order_id": "o-1", "reason": "damaged",
                                                                  "amount": {"amount": "5.00", "currency": "EUR"}})
    old = decoder(confluent_frame(variants.older(), old_id, refund))
    assert old.customer.first_name is None and old.customer.locale == "en"  # reader defaults
    assert old.payload["reason"] is None
    shipped = event("OrderShipped", customer(loyalty_tier="gold"), {"order_id": "o-2", "carrier": "DHL",
                                                                     "tracking_number": "T1"})
    new = decoder(confluent_frame(variants.newer(), new_id, shipped))
    assert new.payload == {"order_id": "o-2", "carrier": "DHL", "tracking_number": "T1", "estimated_delivery_at": None}
    bought = purchase(customer())
    bought["payload"]["gift"] = True
    assert decoder(confluent_frame(variants.newer(), new_id, bought)).payload["order_id"] == bought["payload"]["order_id"]
    loyalty = event("LoyaltyPointsEarned", customer(), {"points": 10})
    with pytest.raises(UnknownEventTypeError, match="LoyaltyPointsEarned"):
        decoder(confluent_frame(variants.newer(), new_id, loyalty))


def test_promoted_types_decode(tmp_path: Path) -> None:
    reader_dir = tmp_path / "avro"
    shutil.copytree(Path(__file__).resolve().parents[2] / "avro", reader_dir)
    line_item = reader_dir / "com.eventflow.events.LineItem.avsc"
    text = json.loads(line_item.read_text())
    next(f for f in text["fields"] if f["name"] == "quantity")["type"] = "double"
    line_item.write_text(json.dumps(text))
    reader = load(reader_dir)
    raw, print_, writer = single_object_frame(variants.current(), purchase(customer()))
    decoder = EventDecoder(reader)
    decoder.add_writer(print_, writer)
    decoded = decoder(raw)
    assert decoded.payload["items"][0]["quantity"] == 1.0 and isinstance(decoded.payload["items"][0]["quantity"], float)


@pytest.mark.parametrize("raw, error", [
    (b"", TruncatedMessageError),
    (b"\x00\x00\x01", TruncatedMessageError),
    (b"\xc3\x01\x00\x01", TruncatedMessageError),
    (b"\x07garbage", UnknownMagicByteError),
    (b"{\"event_id\": 1}", UnknownMagicByteError),
    (b"\xc3\x01" + b"\xff" * 8 + b"body", UnknownSchemaError),
])
def test_framing_errors(raw: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error) as caught:
        EventDecoder(load())(raw)
    assert caught.value.raw == raw


def test_truncated_and_trailing_bodies() -> None:
    schemas = load()
    raw = encode_single_object(record_from_json(purchase(customer())), schemas)
    with pytest.raises(TruncatedMessageError):
        EventDecoder(schemas)(raw[:-7])
    with pytest.raises(InvalidEventError, match="trailing"):
        EventDecoder(schemas)(raw + b"\x00")


def test_event_type_must_match_the_payload() -> None:
    schemas = load()
    record = record_from_json(purchase(customer()))
    record["event_type"] = "CartUpdated"
    with pytest.raises(InvalidEventError, match="does not match"):
        EventDecoder(schemas)(encode_single_object(record, schemas))


@pytest.mark.parametrize("writer", ["current", "older", "newer"])
def test_an_unwanted_type_is_named_from_the_leading_fields_as_the_full_read_names_it(
        writer: str, apicurio: str, client: SchemaRegistryClient, subject: str) -> None:
    schemas = load()
    schema = getattr(variants, writer)()
    schema_id = register(client, subject, schema)
    decoder = EventDecoder(schemas, RegistryWriterLookup(client))
    who = customer()
    for sample in (purchase(who), event("CartUpdated", who, {"cart_id": "c", "items": [],
                                                             "cart_total": {"amount": "1", "currency": "EUR"}})):
        for raw in (confluent_frame(schema, schema_id, sample), encode_single_object(record_from_json(sample), schemas)):
            assert decoder.decode_wanted(raw, None, wanted=frozenset()) == Unwanted(decoder(raw).event_type)


def test_an_unwanted_record_is_not_read_past_its_type_but_an_unknown_type_text_is_read_and_refused() -> None:
    schemas = load()
    decoder = EventDecoder(schemas)
    raw = encode_single_object(record_from_json(purchase(customer())), schemas)
    broken_tail = raw[:-7]
    with pytest.raises(TruncatedMessageError):
        decoder(broken_tail)
    # The price of not decoding what nobody listens to (ADR "Unwanted envelope records"): not checked.
    assert decoder.decode_wanted(broken_tail, None, wanted={"CartUpdated"}) == Unwanted("PurchaseCompleted")
    assert isinstance(decoder.decode_wanted(raw, None, wanted={"PurchaseCompleted"}), CustomerEvent)

    record = record_from_json(purchase(customer()))
    record["event_type"] = "NoSuchEvent"
    with pytest.raises(InvalidEventError, match="does not match"):
        decoder.decode_wanted(encode_single_object(record, schemas), None, wanted={"CartUpdated"})


def test_unknown_schema_ids(apicurio: str) -> None:
    raw = b"\x00" + (999_999).to_bytes(4, "big") + b"\x02"
    with pytest.raises(UnknownSchemaError, match="999999"):
        decoder_for(apicurio)(raw)
    with pytest.raises(UnknownSchemaError, match="no schema registry"):
        EventDecoder(load())(raw)


def test_unresolvable_and_missing_fields(apicurio: str, client: SchemaRegistryClient, subject: str) -> None:
    retyped = variants.current()
    next(f for f in retyped["fields"] if f["name"] == "event_type")["type"] = "int"
    retyped_id = register(client, subject, retyped)
    without_customer_id = variants.current()
    cust = next(f for f in without_customer_id["fields"] if f["name"] == "customer")["type"]
    cust["fields"] = [f for f in cust["fields"] if f["name"] != "id"]
    missing_id = register(client, subject, without_customer_id)
    decoder = decoder_for(apicurio)
    sample = purchase(customer())
    typed = dict(sample, event_type=7)
    with pytest.raises(SchemaResolutionError, match=r"CustomerEvent\.event_type: writer type int"):
        decoder(_frame_raw(retyped, retyped_id, typed))
    with pytest.raises(MissingFieldError, match=r"CustomerEvent\.customer\.id"):
        decoder(confluent_frame(without_customer_id, missing_id, sample))


def _frame_raw(schema: dict[str, object], schema_id: int, event_: dict[str, object]) -> bytes:
    import io

    from fastavro import parse_schema, schemaless_writer

    record = record_from_json({**event_, "event_type": "PurchaseCompleted"})
    record["event_type"] = event_["event_type"]
    body = io.BytesIO(b"\x00" + schema_id.to_bytes(4, "big"))
    body.seek(5)
    schemaless_writer(body, parse_schema(schema, named_schemas={}), record)
    return body.getvalue()


def test_an_unreachable_or_failing_registry_is_transient_not_a_decode_error(
        registry: LocalRegistry, subject: str) -> None:
    schema_id = register(SchemaRegistryClient({"url": registry.url}), subject, variants.current())
    raw = confluent_frame(variants.current(), schema_id, purchase(customer()))
    registry.fail_with(503)
    no_retries = SchemaRegistryClient({"url": registry.url, "max.retries": 0})
    with pytest.raises(RegistryUnavailableError, match="503"):
        EventDecoder(load(), RegistryWriterLookup(no_retries))(raw)
    registry.fail_with(None)
    stopped = LocalRegistry().start()
    stopped.stop()
    decoder = EventDecoder(load(), RegistryWriterLookup(SchemaRegistryClient({"url": stopped.url, "max.retries": 0})))
    with pytest.raises(RegistryUnavailableError, match="unreachable") as caught:
        decoder(raw)
    assert not isinstance(caught.value, DecodeError)


def test_basic_auth_is_sent() -> None:
    guarded = LocalRegistry(username="svc", password="s3cret").start()
    try:
        client = SchemaRegistryClient({"url": guarded.url, "basic.auth.user.info": "svc:s3cret"})
        schema_id = register(client, "auth-value", variants.current())
        raw = confluent_frame(variants.current(), schema_id, purchase(customer()))
        environ = {"EVENTFLOW_SCHEMA_REGISTRY_URL": guarded.url, "EVENTFLOW_SCHEMA_REGISTRY_USERNAME": "svc",
                   "EVENTFLOW_SCHEMA_REGISTRY_PASSWORD": "s3cret"}
        assert build_decoder(environ)(raw).event_type == "PurchaseCompleted"
        with pytest.raises(RegistryUnavailableError, match="401"):
            build_decoder({**environ, "EVENTFLOW_SCHEMA_REGISTRY_PASSWORD": "wrong"})(raw)
    finally:
        guarded.stop()


def test_topics_accept_only_their_encoding(apicurio: str, client: SchemaRegistryClient, subject: str) -> None:
    schema_id = register(client, subject, variants.current())
    sample = purchase(customer())
    confluent = confluent_frame(variants.current(), schema_id, sample)
    single = encode_single_object(record_from_json(sample), load())
    decoder = decoder_for(apicurio, reg="registry", emb="embedded", js="json")
    assert decoder(confluent, topic="reg").event_id == sample["event_id"]
    assert decoder(single, topic="emb").event_id == sample["event_id"]
    assert decoder(single, topic="other").event_id == decoder(confluent, topic="other").event_id  # auto
    with pytest.raises(UnknownMagicByteError, match="Confluent"):
        decoder(single, topic="reg")
    with pytest.raises(UnknownMagicByteError, match="single-object"):
        decoder(confluent, topic="emb")


def test_json_events() -> None:
    decoder = EventDecoder(load(), default_encoding="json")
    sample = purchase(customer())
    decoded = decoder(json.dumps(sample).encode())
    assert decoded.payload["total"] == {"amount": "49.90", "currency": "EUR"}
    assert decoded == EventDecoder(load())(encode_single_object(record_from_json(sample), load()))
    with pytest.raises(InvalidEventError, match="not JSON"):
        decoder(b"\xc3\x01not json")
    with pytest.raises(UnknownEventTypeError):
        decoder(json.dumps(dict(sample, event_type="Nope")).encode())
    with pytest.raises(MissingFieldError, match="customer"):
        decoder(json.dumps({k: v for k, v in sample.items() if k != "customer"}).encode())
    with pytest.raises(InvalidEventError, match="does not match the schema"):
        decoder(json.dumps(dict(sample, payload={"order_id": 5})).encode())


@pytest.mark.parametrize(("value", "reason"), [
    (b"[" * 100_000, "nested deeper than 32"),
    (b'{"a":' * 50_000, "nested deeper than 32"),
    (json.dumps(dict(purchase(customer()), event_type=["PurchaseCompleted"])).encode(), "event_type is a list"),
    (json.dumps(dict(purchase(customer()), payload={"order_id": "o", "cart_id": None, "items": [],
                                                      "total": {"amount": "1e999999999", "currency": "EUR"}})
                ).encode(), "more than 40 digits"),
    (json.dumps(dict(purchase(customer()), payload={"order_id": "o", "cart_id": None, "items": [],
                                                      "total": {"amount": "NaN", "currency": "EUR"}})
                ).encode(), "not finite"),
    (json.dumps(dict(purchase(customer()), customer=[1])).encode(), "does not match the schema"),
])
def test_json_that_crashed_or_hung_the_consumer_is_a_typed_error(value: bytes, reason: str) -> None:
    decoder = EventDecoder(load(), default_encoding="json")
    with pytest.raises(InvalidEventError, match=reason) as caught:
        decoder(value)
    assert caught.value.raw == value


def test_unexpected_failures_inside_the_decoder_become_typed_errors() -> None:
    def broken_lookup(schema_id: int, raw: bytes) -> dict[str, object]:
        raise ZeroDivisionError("a bug in a lookup")

    decoder = EventDecoder(load(), broken_lookup, default_encoding="registry")
    raw = b"\x00\x00\x00\x00\x07rest"
    with pytest.raises(InvalidEventError, match="ZeroDivisionError: a bug in a lookup"):
        decoder(raw)
    assert decoder.needs_registry(raw, None), "a lookup that cannot say it has cached ids is always asked"


def test_needs_registry_only_for_ids_not_yet_cached(registry: LocalRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    schema_id = register(client, f"needs-{uuid.uuid4().hex[:8]}-value", variants.current())
    lookup = RegistryWriterLookup(client)
    decoder = EventDecoder(load(), lookup)
    raw = confluent_frame(variants.current(), schema_id, purchase(customer()))
    assert decoder.needs_registry(raw, "t")
    decoder(raw, "t")
    assert not decoder.needs_registry(raw, "t")
    assert not decoder.needs_registry(encode_single_object(record_from_json(purchase(customer())), load()), "t")


def test_configuration_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="EVENTFLOW_SCHEMA_REGISTRY_URL"):
        build_decoder({"EVENTFLOW_TOPIC_ENCODINGS": "orders=registry"})
    with pytest.raises(ConfigError, match="EVENTFLOW_TOPIC_ENCODINGS"):
        build_decoder({"EVENTFLOW_TOPIC_ENCODINGS": "orders=protobuf"})
    with pytest.raises(ConfigError, match="EVENTFLOW_SCHEMA_REGISTRY_PASSWORD"):
        build_decoder({"EVENTFLOW_SCHEMA_REGISTRY_URL": "http://x", "EVENTFLOW_SCHEMA_REGISTRY_USERNAME": "u"})


def test_embedded_mode_reads_every_envelope_version_kept_in_history(tmp_path: Path) -> None:
    avro_dir = tmp_path / "avro"
    shutil.copytree(Path(__file__).resolve().parents[2] / "avro", avro_dir)
    refund = event("OrderRefunded", customer(first_name="Ana"), {"order_id": "o-1", "reason": "late",
                                                                  "amount": {"amount": "5.00", "currency": "EUR"}})
    raw, print_, _ = single_object_frame(variants.older(), refund)
    with pytest.raises(UnknownSchemaError, match=print_.hex()):
        build_decoder({})(raw)  # the repository's avro/ does not keep that version
    (avro_dir / "history" / f"CustomerEvent-{print_.hex()}.avsc").write_text(json.dumps(variants.older()))
    decoded = build_decoder({"EVENTFLOW_AVRO_DIR": str(avro_dir)})(raw)
    assert (decoded.customer.first_name, decoded.payload["reason"]) == (None, None)
