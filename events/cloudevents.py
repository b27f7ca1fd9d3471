"""CloudEvents on Kafka (the CNCF Kafka protocol binding): binary and structured content modes.

* Binary mode: the attributes are ``ce_<name>`` headers (UTF-8), ``datacontenttype`` is the
  ``content-type`` header, and the record value is the data as it is (JSON, or Avro in the
  Confluent wire format when the data schema is in the registry).
* Structured mode: the ``content-type`` header is ``application/cloudevents+json`` and the value is
  one JSON object holding the attributes and ``data`` (or ``data_base64``).

`read` tells the modes apart by the headers alone, so a record that is no CloudEvent costs a header
scan and nothing more.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from events.errors import InvalidEventError, MissingFieldError
from events.generic import checked_object
from events.model import JsonValue

STRUCTURED_JSON = "application/cloudevents+json"
HEADER_PREFIX = "ce_"
CONTENT_TYPE = "content-type"
#: Attributes every CloudEvent has (spec 1.0).
REQUIRED = ("specversion", "id", "source", "type")


class Mode(StrEnum):
    """How a CloudEvent sits in a Kafka record."""

    BINARY = "binary"
    STRUCTURED = "structured"


@dataclass(frozen=True)
class CloudEvent:
    """One CloudEvent's context attributes and its data.

    ``data`` is the undecoded value in binary mode (bytes); in structured mode it is the parsed
    ``data`` member, or bytes from ``data_base64``.
    """

    mode: Mode
    attributes: Mapping[str, str] = field(default_factory=dict)
    data: bytes | JsonValue = None

    @property
    def type(self) -> str:
        return self.attributes["type"]

    @property
    def content_type(self) -> str | None:
        return self.attributes.get("datacontenttype")

    def attribute(self, name: str) -> str | None:
        """An attribute by its name without prefix (``id``, ``subject``, ``time``), None when absent."""
        return self.attributes.get(name)


def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def mode_of(headers: Iterable[tuple[str, str | bytes | None]]) -> Mode | None:
    """Which content mode the headers announce; None for a record that is no CloudEvent."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == f"{HEADER_PREFIX}specversion":
            return Mode.BINARY
        if lowered == CONTENT_TYPE and (_text(value) or "").lower().startswith(STRUCTURED_JSON):
            return Mode.STRUCTURED
    return None


def read(headers: Iterable[tuple[str, str | bytes | None]], value: bytes) -> CloudEvent | None:
    """The CloudEvent in a record, None when its headers announce none.

    Raises:
        MissingFieldError: a required attribute (``specversion``, ``id``, ``source``, ``type``) is missing.
        InvalidEventError: a header is not UTF-8, or a structured value is not a JSON object.
    """
    pairs = list(headers)
    mode = mode_of(pairs)
    if mode is None:
        return None
    if mode is Mode.BINARY:
        attributes: dict[str, str] = {}
        for name, raw_header in pairs:
            lowered = name.lower()
            text = _text(raw_header)
            if lowered.startswith(HEADER_PREFIX) or lowered == CONTENT_TYPE:
                if text is None:
                    raise InvalidEventError(f"CloudEvents header {name!r} is not UTF-8 text", value)
                attributes["datacontenttype" if lowered == CONTENT_TYPE else lowered[len(HEADER_PREFIX):]] = text
        event = CloudEvent(Mode.BINARY, attributes, value)
    else:
        event = _structured(value)
    for name in REQUIRED:
        if not event.attributes.get(name):
            raise MissingFieldError(f"CloudEvent attribute {name!r} is missing ({event.mode} mode)", value)
    return event


def _structured(value: bytes) -> CloudEvent:
    try:
        parsed: Any = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEventError(f"structured CloudEvent is not JSON: {str(exc)[:200]}", value) from exc
    envelope = checked_object(parsed, value)
    attributes = {k: v if isinstance(v, str) else json.dumps(v) for k, v in envelope.items()
                  if k not in ("data", "data_base64") and v is not None}
    data: bytes | JsonValue = envelope.get("data")
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEventError("structured CloudEvent data_base64 is not base64", value) from exc
    return CloudEvent(Mode.STRUCTURED, attributes, data)
