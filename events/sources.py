"""Event sources as data: how to read events that upstream services publish in their own shape.

A source file (``journeys/sources.yaml``, schema ``journeys/sources.schema.json``) lists sources;
each says which records it reads (topic patterns, optionally record names or CloudEvents types),
how their bodies are framed, and where the event's type, id, customer id and time come from. The
result of every source is a `CustomerEvent`, so routing and journeys do not care who published.

A value's *locator* is either a field path into the event body (``{field: customer.id}``) or one
of the record's own attributes (`Origin`). The id fallback ``position`` is
``"<topic>/<partition>/<offset>"``: deterministic, so a redelivered record keeps its id and is
deduplicated, while the same event published twice gets two ids.

Fields a source maps to contact details (``contact``) move to `CustomerEvent.customer` and are
removed from the payload, so the address exists once, where the privacy measures for contact
details apply.

The built-in ``CustomerEvent`` envelope is the implicit last source: a record that no source in the
file claims is read by `events.codec.EventDecoder` exactly as before (its events keep
``source == ""``).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import yaml
from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from core.errors import EventflowError
from events import cloudevents
from events.codec import CONFLUENT_MAGIC, EventDecoder, KafkaRecord, WriterSchemaLookup
from events.errors import DecodeError, InvalidEventError, MissingFieldError, UnknownSchemaError
from events.generic import read_avro, read_json_object, record_name
from events.model import Customer, CustomerEvent, Decoded, JsonValue, Unwanted
from events.schemas import ParsedSchema

SOURCES_FILE = "sources.yaml"
#: `Customer` fields a source may map from the event body.
CONTACT_FIELDS = ("email", "phone", "whatsapp", "timezone", "locale", "first_name")


class RecordDecoder(Protocol):
    """What the consumer decodes records with: `SourceDecoder`, or `EventDecoder` for the envelope alone."""

    def needs_registry_for(self, record: KafkaRecord) -> bool: ...

    def decode_record(self, record: KafkaRecord, wanted: Container[str] | None) -> Decoded: ...


class Format(StrEnum):
    """How a source's record values are framed."""

    #: Confluent wire format (magic byte, schema id), writer schema from the registry.
    AVRO = "avro"
    #: A JSON object.
    JSON = "json"
    #: A CloudEvent, binary or structured mode; binary data is Avro (wire format) or JSON by content type.
    CLOUDEVENTS = "cloudevents"
    #: The built-in ``CustomerEvent`` envelope (as `events.codec.EventDecoder` reads it), declared explicitly.
    ENVELOPE = "envelope"


class Origin(StrEnum):
    """Values a record carries outside its body."""

    RECORD_NAME = "record_name"  # the Avro record's name without namespace
    CE_TYPE = "ce_type"
    CE_ID = "ce_id"
    CE_SUBJECT = "ce_subject"
    CE_TIME = "ce_time"
    KEY = "key"  # the Kafka record key, UTF-8
    POSITION = "position"  # "<topic>/<partition>/<offset>"
    TIMESTAMP = "timestamp"  # the Kafka record timestamp


@dataclass(frozen=True)
class Locator:
    """Where one value of the event comes from: a body field path, or an `Origin`."""

    origin: Origin | None = None
    field: str | None = None

    def __str__(self) -> str:
        return self.origin.value if self.origin is not None else f"field {self.field}"


@dataclass(frozen=True)
class SchemaRef:
    """Where a source event's body schema is: a local ``.avsc`` file, or the latest version of a registry subject."""

    path: Path | None = None
    subject: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"registry subject {self.subject}"


def _schema_ref(value: Any, base_dir: Path, where: str) -> SchemaRef:
    if isinstance(value, str) and value:
        return SchemaRef(path=base_dir / value)
    if isinstance(value, Mapping) and set(value) == {"subject"} and isinstance(value["subject"], str):
        return SchemaRef(subject=value["subject"])
    raise SourceFileError(f"{where}: give an .avsc path or {{subject: name}}")


@dataclass(frozen=True)
class EventSource:
    """One declared source; see the module docstring."""

    name: str
    topics: tuple[str, ...]
    format: Format
    event_type: Locator
    event_id: Locator
    customer_id: Locator
    occurred_at: Locator
    records: tuple[str, ...] = ()
    contact: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: Which of its event types are identify events (all when ``True``).
    identify: bool | frozenset[str] = False
    #: Which of its event types' contact details override the profile (all when ``True``).
    contact_override: bool | frozenset[str] = False
    reader_schema: ParsedSchema | None = None
    #: Event type -> where the Avro schema of its body is, for `eventflow journeys validate`.
    schemas: Mapping[str, SchemaRef] = field(default_factory=dict)
    #: Type as published (e.g. a CloudEvents type ``com.shop.shipping.dispatched``) -> event type journeys use.
    event_types: Mapping[str, str] = field(default_factory=dict)

    def type_of(self, published: str) -> str:
        """The event type journeys know a published type by (itself unless ``event_types`` renames it)."""
        return self.event_types.get(published, published)

    def is_identify(self, event_type: str) -> bool:
        """Whether this source's ``event_type`` events are identify/profile events."""
        return self.identify if isinstance(self.identify, bool) else event_type in self.identify

    def overrides_contact(self, event_type: str) -> bool:
        """Whether this source's ``event_type`` events' contact details override the profile."""
        return (self.contact_override if isinstance(self.contact_override, bool)
                else event_type in self.contact_override)

    def reads_topic(self, topic: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.topics)

    def reads_record(self, name: str | None) -> bool:
        return not self.records or name in self.records


class SourceFileError(EventflowError):
    """The source file is unreadable or breaks its schema; names the file and the entry."""


# -- the file ------------------------------------------------------------------------------------


def _locator(value: Any, where: str) -> Locator:
    if isinstance(value, str):
        try:
            return Locator(origin=Origin(value))
        except ValueError as exc:
            raise SourceFileError(f"{where}: {value!r} is none of {', '.join(o.value for o in Origin)}") from exc
    if isinstance(value, Mapping) and set(value) == {"field"} and isinstance(value["field"], str) and value["field"]:
        return Locator(field=value["field"])
    raise SourceFileError(f"{where}: give one of {', '.join(o.value for o in Origin)} or {{field: a.b}}")


def _flag(value: Any) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise ValueError("identify and contact_override are true, false or a list of event types")


def _schema_file(path: Path, where: str) -> ParsedSchema:
    try:
        parsed = parse_schema(json.loads(path.read_text()))
    except (OSError, ValueError, SchemaParseException, KeyError, TypeError) as exc:
        raise SourceFileError(f"{where}: {path} is not a readable Avro schema: {exc}") from exc
    if not isinstance(parsed, dict):
        raise SourceFileError(f"{where}: {path} is not an Avro record schema")
    return parsed


def parse_sources(data: Any, base_dir: Path, file: str = SOURCES_FILE) -> tuple[EventSource, ...]:
    """The sources of a parsed source file; relative schema paths are read from ``base_dir``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("sources"), list):
        raise SourceFileError(f"{file}: expected a mapping with a list 'sources'")
    sources: list[EventSource] = []
    for index, entry in enumerate(data["sources"]):
        where = f"{file}: sources[{index}]"
        if not isinstance(entry, Mapping):
            raise SourceFileError(f"{where}: expected a mapping")
        try:
            name = str(entry["name"])
            topics = tuple(str(t) for t in entry["topics"])
            fmt = Format(entry["format"])
            reader_path = entry.get("reader_schema")
            sources.append(EventSource(
                name=name, topics=topics, format=fmt,
                event_type=_locator(entry.get("type", Origin.CE_TYPE.value if fmt is Format.CLOUDEVENTS
                                              else Origin.RECORD_NAME.value), f"{where}.type"),
                event_id=_locator(entry.get("id", Origin.CE_ID.value if fmt is Format.CLOUDEVENTS
                                            else Origin.POSITION.value), f"{where}.id"),
                customer_id=_locator(entry.get("customer_id", Origin.KEY.value), f"{where}.customer_id"),
                occurred_at=_locator(entry.get("time", Origin.CE_TIME.value if fmt is Format.CLOUDEVENTS
                                               else Origin.TIMESTAMP.value), f"{where}.time"),
                records=tuple(str(r) for r in entry.get("records") or ()),
                contact={str(k): str(v) for k, v in (entry.get("contact") or {}).items()},
                attributes={str(k): str(v) for k, v in (entry.get("attributes") or {}).items()},
                identify=_flag(entry.get("identify", False)),
                contact_override=_flag(entry.get("contact_override", False)),
                reader_schema=_schema_file(base_dir / reader_path, f"{where}.reader_schema") if reader_path else None,
                schemas={str(k): _schema_ref(v, base_dir, f"{where}.schemas.{k}")
                         for k, v in (entry.get("schemas") or {}).items()},
                event_types={str(k): str(v) for k, v in (entry.get("event_types") or {}).items()},
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceFileError(f"{where}: {type(exc).__name__}: {exc}") from exc
        unknown = set(sources[-1].contact) - set(CONTACT_FIELDS)
        if unknown:
            raise SourceFileError(f"{where}.contact: {', '.join(sorted(unknown))} is not one of {', '.join(CONTACT_FIELDS)}")
    names = [s.name for s in sources]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceFileError(f"{file}: source names {', '.join(duplicated)} are used twice")
    return tuple(sources)


def load_sources(path: Path) -> tuple[EventSource, ...]:
    """The sources in ``path``; none when the file does not exist (only the built-in envelope is read)."""
    if not path.exists():
        return ()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SourceFileError(f"{path}: cannot be read: {exc}") from exc
    return parse_sources(data, path.parent, str(path))


# -- decoding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """A record opened far enough to choose its source and type, before its body is decoded."""

    event: cloudevents.CloudEvent | None
    body: bytes | JsonValue
    writer: ParsedSchema | None
    name: str | None  # Avro record full name, or CloudEvents type


class SourceDecoder:
    """Decodes any declared source's records into `CustomerEvent`s; the rest go to the envelope decoder.

    Same contract as `EventDecoder`: a `DecodeError` subclass carrying the raw value for every
    fault of the record, `RegistryUnavailableError` when the registry cannot answer.
    """

    def __init__(self, sources: Iterable[EventSource], envelope: EventDecoder,
                 registry_lookup: WriterSchemaLookup | None = None) -> None:
        self.sources = tuple(sources)
        self._envelope = envelope
        self._lookup = registry_lookup
        self._by_topic: dict[str, list[EventSource]] = {}

    def _candidates(self, topic: str) -> list[EventSource]:
        found = self._by_topic.get(topic)
        if found is None:
            found = [s for s in self.sources if s.reads_topic(topic)]
            if len(self._by_topic) < 10_000:  # topics are few; the bound only guards against a pattern-subscribed flood
                self._by_topic[topic] = found
        return found

    def needs_registry_for(self, record: KafkaRecord) -> bool:
        """Whether decoding ``record`` would ask the registry over the network (run it off the event loop)."""
        if not self._candidates(record.topic):
            return self._envelope.needs_registry_for(record)
        value = record.value
        if self._lookup is None or len(value) < 5 or value[0] != CONFLUENT_MAGIC:
            return False
        is_cached = getattr(self._lookup, "is_cached", None)
        return not (callable(is_cached) and is_cached(int.from_bytes(value[1:5], "big")))

    def decode_record(self, record: KafkaRecord, wanted: Container[str] | None) -> Decoded:
        """The record's event, or only its type (`Unwanted`) when ``wanted`` does not hold it (the body stays unread)."""
        candidates = self._candidates(record.topic)
        if not candidates:
            return self._envelope.decode_record(record, wanted)
        try:
            return self._decode(record, candidates, wanted)
        except DecodeError:
            raise
        except RecursionError as exc:
            raise InvalidEventError("value is nested too deeply to decode", record.value) from exc
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            raise InvalidEventError(f"undecodable value: {type(exc).__name__}: {str(exc)[:200]}",
                                    record.value) from exc

    def _decode(self, record: KafkaRecord, candidates: list[EventSource],
                wanted: Container[str] | None) -> Decoded:
        opened = self._open(record, {s.format for s in candidates})
        source = next((s for s in candidates if _fits(s, opened) and s.reads_record(opened.name)), None)
        if source is None:
            return self._envelope.decode_record(record, wanted)
        if wanted is not None and source.identify:
            wanted = _OrIdentify(wanted, source)  # identify events update the profile whoever else listens
        if source.format is Format.ENVELOPE:
            match self._envelope.decode_record(record, wanted):
                case Unwanted() as unwanted:
                    return unwanted
                case CustomerEvent() as event:
                    return replace(event, source=source.name, identify=source.is_identify(event.event_type),
                                   contact_override=source.overrides_contact(event.event_type))
        cheap = _cheap_type(source, opened)
        if cheap is not None and wanted is not None and cheap not in wanted:
            return Unwanted(cheap)
        body = self._body(record, source, opened)
        event_type = cheap or source.type_of(_text(_value(source.event_type, record, opened, body), "type",
                                                     record.value))
        if wanted is not None and event_type not in wanted:
            return Unwanted(event_type)
        return _event(source, record, opened, body, event_type)

    def _open(self, record: KafkaRecord, formats: set[Format]) -> _Read:
        value = record.value
        event = cloudevents.read(record.headers, value) if Format.CLOUDEVENTS in formats else None
        body: bytes | JsonValue = event.data if event is not None else value
        writer = None
        avro_possible = Format.AVRO in formats if event is None else not _is_json(event)
        if avro_possible and isinstance(body, bytes) and len(body) >= 5 and body[0] == CONFLUENT_MAGIC:
            if self._lookup is None:
                raise UnknownSchemaError(f"schema id {int.from_bytes(body[1:5], 'big')} but no schema registry "
                                         "is configured", value)
            writer = self._lookup(int.from_bytes(body[1:5], "big"), value)
        name = event.type if event is not None else (record_name(writer) if writer is not None else None)
        return _Read(event, body, writer, name)

    def _body(self, record: KafkaRecord, source: EventSource, opened: _Read) -> dict[str, JsonValue]:
        body = opened.body
        if opened.writer is not None and isinstance(body, bytes):
            return read_avro(body, 5, opened.writer, source.reader_schema)
        if isinstance(body, bytes):
            if not body:
                return {}
            return read_json_object(body, record.value)
        if body is None:
            return {}
        if isinstance(body, dict):
            return body
        raise InvalidEventError(f"CloudEvent data is a {type(body).__name__}, not an object", record.value)


def _is_json(event: cloudevents.CloudEvent | None) -> bool:
    content_type = (event.content_type or "") if event is not None else ""
    return "json" in content_type.lower()


def _fits(source: EventSource, opened: _Read) -> bool:
    match source.format:
        case Format.ENVELOPE:
            return True
        case Format.CLOUDEVENTS:
            return opened.event is not None
        case Format.AVRO:
            return opened.event is None and opened.writer is not None
        case Format.JSON:
            # Only what looks like a JSON object: an envelope record sharing the topic stays the envelope's.
            body = opened.body
            return (opened.event is None and opened.writer is None and isinstance(body, bytes)
                    and body.lstrip()[:1] == b"{")


def _cheap_type(source: EventSource, opened: _Read) -> str | None:
    """The event type when the record's name or CloudEvents type gives it, before the body is read."""
    match source.event_type.origin:
        case Origin.RECORD_NAME if opened.writer is not None and opened.name:
            return source.type_of(opened.name.rsplit(".", 1)[-1])
        case Origin.CE_TYPE if opened.event is not None:
            return source.type_of(opened.event.type)
    return None


def _path(body: Mapping[str, JsonValue], path: str) -> JsonValue:
    value: Any = body
    for segment in path.split("."):
        if not isinstance(value, Mapping) or segment not in value:
            return None
        value = value[segment]
    return value


def _value(locator: Locator, record: KafkaRecord, opened: _Read, body: Mapping[str, JsonValue]) -> JsonValue:
    if locator.field is not None:
        return _path(body, locator.field)
    event = opened.event
    match locator.origin:
        case Origin.RECORD_NAME:
            return opened.name.rsplit(".", 1)[-1] if opened.writer is not None and opened.name else None
        case Origin.CE_TYPE | Origin.CE_ID | Origin.CE_SUBJECT | Origin.CE_TIME:
            return event.attribute(locator.origin.value[3:]) if event is not None else None
        case Origin.KEY:
            return record.key.decode("utf-8") if record.key else None
        case Origin.POSITION:
            return f"{record.topic}/{record.partition}/{record.offset}"
        case Origin.TIMESTAMP:
            if record.timestamp_ms is None or record.timestamp_ms < 0:
                return None
            return dt.datetime.fromtimestamp(record.timestamp_ms / 1000, dt.UTC).isoformat()
    return None


def without(body: Mapping[str, JsonValue], paths: Iterable[str]) -> dict[str, JsonValue]:
    """``body`` less the fields at ``paths`` (a copy along those paths only; the rest is shared)."""
    result = dict(body)
    for path in paths:
        head, _, rest = path.partition(".")
        if head not in result:
            continue
        if not rest:
            del result[head]
        elif isinstance(result[head], Mapping):
            result[head] = without(result[head], [rest])
    return result


def _text(value: JsonValue, what: str, raw: bytes) -> str:
    if value is None or value == "":
        raise MissingFieldError(f"the event's {what} is missing", raw)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEventError(f"the event's {what} is a {type(value).__name__}, not a string", raw)
    return str(value)


def _time(value: JsonValue, raw: bytes) -> str:
    """An ISO 8601 timestamp from a string or epoch milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat()
    text = _text(value, "time", raw)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEventError(f"the event's time {text[:40]!r} is not an ISO 8601 timestamp", raw) from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).isoformat()


@dataclass(frozen=True)
class _OrIdentify:
    """The wanted event types plus the source's identify types (which the profile always wants)."""

    wanted: Container[str]
    source: EventSource

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.wanted or (isinstance(event_type, str) and self.source.is_identify(event_type))


def _event(source: EventSource, record: KafkaRecord, opened: _Read, body: dict[str, JsonValue],
           event_type: str) -> CustomerEvent:
    raw = record.value
    locate = lambda locator: _value(locator, record, opened, body)  # noqa: E731 - one binding, five uses
    contact: dict[str, Any] = {}
    for name, path in source.contact.items():
        found = _path(body, path)
        if found is not None:
            contact[name] = str(found)
    contact.setdefault("timezone", "UTC")
    contact.setdefault("locale", "en")
    customer = Customer(id=_text(locate(source.customer_id), "customer id", raw), **contact,
                        attributes={n: _path(body, p) for n, p in source.attributes.items()})
    return CustomerEvent(
        event_id=_text(locate(source.event_id), "id", raw),
        event_type=event_type,
        occurred_at=_time(locate(source.occurred_at), raw),
        customer=customer,
        payload=without(body, source.contact.values()),
        source=source.name,
        identify=source.is_identify(event_type),
        contact_override=source.overrides_contact(event_type),
    )
