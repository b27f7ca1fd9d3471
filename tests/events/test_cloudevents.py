"""The CloudEvents reader checks exactly what CloudEvents 1.0 requires of each context attribute."""

from __future__ import annotations

import json

import pytest

from events import cloudevents
from events.errors import InvalidEventError, MissingFieldError

VALID = {"specversion": "1.0", "id": "e-1", "source": "/shipping", "type": "com.shop.dispatched"}


def binary(**attributes: str) -> cloudevents.CloudEvent | None:
    headers = [(f"ce_{name}", value.encode()) for name, value in {**VALID, **attributes}.items()]
    return cloudevents.read(headers, b"{}")


def structured(**members: object) -> cloudevents.CloudEvent | None:
    envelope = {**VALID, **members}
    return cloudevents.read([("content-type", b"application/cloudevents+json")], json.dumps(envelope).encode())


@pytest.mark.parametrize("read", [binary, structured])
@pytest.mark.parametrize(("name", "value", "reason"), [
    ("specversion", "2.0", "specversion '2.0' is not supported"),
    ("specversion", "banana", "specversion 'banana' is not supported"),
    ("specversion", "1", "specversion '1' is not supported"),
    ("id", "", "'id' is empty"),
    ("type", "", "'type' is empty"),
    ("subject", "", "'subject' is empty"),
    ("source", "", "'source' is empty"),
    ("source", "shop orders", "not a URI-reference"),
    ("source", "1shop:orders", "not a URI-reference"),
    ("source", "/bad%zz", "not a URI-reference"),
    ("time", "2026-03-03 08:00:00", "not an RFC 3339 timestamp"),
    ("time", "2026-02-30T08:00:00Z", "not an RFC 3339 timestamp"),
    ("dataschema", "/schemas/relative", "not an absolute URI"),
    ("datacontenttype", "json", "not a media type"),
])
def test_an_attribute_breaking_its_type_is_an_invalid_event(read, name: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidEventError, match=reason):
        read(**{name: value})


@pytest.mark.parametrize("read", [binary, structured])
@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
def test_a_missing_required_attribute_is_a_missing_field(read, name: str) -> None:
    members = {k: v for k, v in VALID.items() if k != name}
    if read is binary:
        headers = [(f"ce_{k}", v.encode()) for k, v in members.items()]
        if name == "specversion":  # without ce_specversion the record is no binary CloudEvent at all
            assert cloudevents.read(headers, b"{}") is None
            return
        with pytest.raises(MissingFieldError, match=repr(name)):
            cloudevents.read(headers, b"{}")
    else:
        with pytest.raises(MissingFieldError, match=repr(name)):
            cloudevents.read([("content-type", b"application/cloudevents+json")], json.dumps(members).encode())


@pytest.mark.parametrize("name", ["specversion", "id", "type", "source", "time", "subject"])
def test_a_structured_string_attribute_given_as_a_number_is_an_invalid_event(name: str) -> None:
    with pytest.raises(InvalidEventError, match=f"'{name}' is a JSON int, not a string"):
        structured(**{name: 1})


def test_extensions_may_be_booleans_or_integers_but_not_objects_and_names_are_lower_case() -> None:
    event = structured(priority=3, urgent=True)
    assert event is not None and event.attribute("priority") == "3" and event.attribute("urgent") == "true"
    with pytest.raises(InvalidEventError, match="'meta' is a JSON dict"):
        structured(meta={"a": 1})
    with pytest.raises(InvalidEventError, match="not lower-case letters and digits"):
        structured(traceParent="00-ab")


@pytest.mark.parametrize("read", [binary, structured])
def test_a_full_valid_event_reads(read) -> None:
    event = read(time="2026-03-03T08:00:00.5+01:00", subject="cust-1", dataschema="https://schemas.example/ship.avsc",
                 datacontenttype="application/json; charset=utf-8", source="urn:shop:shipping")
    assert event is not None and event.type == "com.shop.dispatched"
    assert event.attribute("time") == "2026-03-03T08:00:00.5+01:00"
