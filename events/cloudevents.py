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
import datetime as dt
import json
import re
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
#: The one CloudEvents version read; any other is dead-lettered (a 2.0 may mean anything).
SPEC_VERSION = "1.0"
#: Attributes the spec types as String (or URI, timestamp): JSON strings in structured mode, never numbers.
STRING_ATTRIBUTES = frozenset({*REQUIRED, "datacontenttype", "dataschema", "subject", "time"})

_NAME = re.compile(r"[a-z0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_FIRST_SEGMENT = re.compile(r"[^/?#]*:")
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\]|\\.)*"))*[ \t]*')
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


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
        InvalidEventError: a header is not UTF-8, a structured value is not a JSON object, or an
            attribute breaks CloudEvents 1.0 (see `check`).
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
    check(event, value)
    return event


def check(event: CloudEvent, value: bytes) -> None:
    """Checks the context attributes against CloudEvents 1.0 exactly; ``value`` goes into the error.

    Raises:
        MissingFieldError: a required attribute is missing.
        InvalidEventError: an attribute breaks its type (the spec version is not ``1.0``; an empty
            id, type or subject; a source that is no URI-reference; a time that is no RFC 3339
            timestamp; a data schema that is no URI; a content type that is no RFC 2046 media type;
            an attribute name that is not lower-case letters and digits).
    """
    attributes = event.attributes
    for name in REQUIRED:
        if name not in attributes:
            raise MissingFieldError(f"CloudEvent attribute {name!r} is missing ({event.mode} mode)", value)
    if attributes["specversion"] != SPEC_VERSION:
        raise InvalidEventError(f"CloudEvent specversion {attributes['specversion'][:40]!r} is not supported "
                                f"(only {SPEC_VERSION!r})", value)
    for name in attributes:
        if not _NAME.fullmatch(name):
            raise InvalidEventError(f"CloudEvent attribute name {name[:40]!r} is not lower-case letters and digits",
                                    value)
    for name in ("id", "type", "source", "subject", "datacontenttype", "dataschema", "time"):
        if name in attributes and not attributes[name]:
            raise InvalidEventError(f"CloudEvent attribute {name!r} is empty ({event.mode} mode)", value)
    if not _is_uri_reference(attributes["source"]):
        raise InvalidEventError(f"CloudEvent source {attributes['source'][:80]!r} is not a URI-reference", value)
    schema = attributes.get("dataschema")
    if schema is not None and not (_is_uri_reference(schema) and _SCHEME.match(schema)):
        raise InvalidEventError(f"CloudEvent dataschema {schema[:80]!r} is not an absolute URI", value)
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not _MEDIA_TYPE.fullmatch(content_type):
        raise InvalidEventError(f"CloudEvent datacontenttype {content_type[:80]!r} is not a media type", value)
    time = attributes.get("time")
    if time is not None and not _is_timestamp(time):
        raise InvalidEventError(f"CloudEvent time {time[:40]!r} is not an RFC 3339 timestamp", value)


def _is_uri_reference(text: str) -> bool:
    """RFC 3986 URI-reference: allowed characters only, whole percent escapes, a valid scheme if any."""
    if not _URI_CHARACTERS.fullmatch(text) or _BROKEN_ESCAPE.search(text):
        return False
    first = _FIRST_SEGMENT.match(text)
    # A colon in the first segment makes it a scheme, and then it must be one.
    return first is None or _SCHEME.match(text) is not None


def _is_timestamp(text: str) -> bool:
    if not _TIMESTAMP.fullmatch(text):
        return False
    try:
        dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _structured(value: bytes) -> CloudEvent:
    try:
        parsed: Any = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEventError(f"structured CloudEvent is not JSON: {str(exc)[:200]}", value) from exc
    envelope = checked_object(parsed, value)
    attributes: dict[str, str] = {}
    for name, member in envelope.items():
        if name in ("data", "data_base64") or member is None:  # a JSON null is an absent attribute
            continue
        if isinstance(member, str):
            attributes[name] = member
        elif name in STRING_ATTRIBUTES or not isinstance(member, bool | int):
            # Only extensions may be a Boolean or an Integer; no attribute is a float, an object or an array.
            raise InvalidEventError(f"structured CloudEvent attribute {name[:40]!r} is a JSON "
                                    f"{type(member).__name__}, not a string", value)
        else:
            attributes[name] = json.dumps(member)
    data: bytes | JsonValue = envelope.get("data")
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEventError("structured CloudEvent data_base64 is not base64", value) from exc
    return CloudEvent(Mode.STRUCTURED, attributes, data)
