"""A source's identify events are decoded even when no journey listens to their type: they feed the profile."""

from __future__ import annotations

from pathlib import Path

from consumer.routes import EventRoutes, UpdateProfile
from events import samples
from events.model import CustomerEvent, Unwanted
from events.producer import encode_event
from tests.events.test_source_decoding import JSON_SOURCE, SCHEMAS, decoder_for, record


def test_an_identify_type_nobody_listens_to_is_decoded_and_routed_to_the_profile(tmp_path: Path) -> None:
    source = {**JSON_SOURCE, "contact": {"email": "mail"}, "identify": ["Registered"]}
    decoder = decoder_for([source], tmp_path)
    wanted = {"PurchaseCompleted"}

    identify = decoder.decode_record(record(b'{"kind": "Registered", "mail": "new@example.com"}', key=b"c-1",
                                            timestamp_ms=1), wanted)
    other = decoder.decode_record(record(b'{"kind": "Ping", "mail": "x@example.com"}', key=b"c-1", timestamp_ms=1),
                                  wanted)

    assert other == Unwanted("Ping"), "other types nobody listens to stay cheap"
    assert isinstance(identify, CustomerEvent) and identify.identify and identify.customer.email == "new@example.com"
    assert EventRoutes([]).route(identify) == [UpdateProfile("preferences:c-1", identify=True)]


def test_the_envelope_as_a_source_decodes_its_identify_types_for_the_profile(tmp_path: Path) -> None:
    envelope = {"name": "eventflow", "topics": ["customer-*"], "format": "envelope", "identify": ["CartUpdated"]}
    decoder = decoder_for([envelope], tmp_path)

    decoded = decoder.decode_record(record(encode_event(samples.cart_update(samples.customer()), SCHEMAS),
                                           topic="customer-events"), {"PurchaseCompleted"})

    assert isinstance(decoded, CustomerEvent) and decoded.identify
