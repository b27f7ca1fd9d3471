"""Avro encoding and decoding of customer events.

Two Avro framings are read (per topic, one or both; see `EventDecoder`):

* Confluent wire format: ``0x00``, 4-byte big-endian schema id, Avro body (writer schema from a registry);
* Avro single-object encoding: ``0xC3 0x01``, 8-byte CRC-64-AVRO fingerprint, Avro body (writer
  schema from ``avro/``); this is what the embedded default writes, so it needs no registry server.

The writer schema is resolved against Eventflow's reader schema (``avro/``) by fastavro, so
fields added with defaults, removed fields and promoted types decode.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Container, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro._read_common import SchemaResolutionError as FastavroResolutionError
from fastavro.validation import ValidationError, validate

from events.compat import Incompatibility, check
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
from events.generic import json_safe
from events.model import Customer, CustomerEvent, Decoded, Unwanted
from events.schemas import NAMESPACE, ParsedSchema, SchemaSet

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0


class KafkaRecord(Protocol):
    """What a decoder needs of a consumed record (``consumer.record.SourceRecord`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> tuple[tuple[str, str | bytes | None], ...]: ...
    @property
    def timestamp_ms(self) -> int | None: ...


class WriterSchemaLookup(Protocol):
    """Finds the writer schema for a Confluent schema id (a registry client, cached)."""

    def __call__(self, schema_id: int, raw: bytes) -> ParsedSchema: ...


class CachingWriterSchemaLookup(WriterSchemaLookup, Protocol):
    """A lookup that can say whether an id is answered without a remote call."""

    def is_cached(self, schema_id: int) -> bool: ...


#: Deepest JSON nesting an event can have; the schemas need 6 levels, so deeper input is poison.
MAX_JSON_DEPTH = 32
#: Decimal digits and exponent a money amount may have before it is rejected unchecked: far beyond
#: the schemas' ``decimal(12, 2)``, yet small enough that validating it costs microseconds
#: (``1e999999999`` made fastavro's validation run for minutes).
MAX_DECIMAL_DIGITS = 40


def encode_single_object(record: Mapping[str, Any], schemas: SchemaSet) -> bytes:
    """Encodes a record (as from `record_from_json`) with Avro single-object framing."""
    body = io.BytesIO()
    body.write(SINGLE_OBJECT_MAGIC)
    body.write(schemas.fingerprint)
    schemaless_writer(body, schemas.envelope, dict(record))
    return body.getvalue()


def record_from_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """Turns a JSON event (strings for decimals, ISO timestamps) into fastavro's write form.

    The payload becomes a ``(record name, body)`` tuple so fastavro writes the union branch that
    ``event_type`` names; a record fastavro cannot write raises ``ValueError`` at encode time.
    """
    record = dict(event)
    record["occurred_at"] = _parse_timestamp(record["occurred_at"])
    payload = record.get("payload") or {}
    record["payload"] = (f"{NAMESPACE}.{record['event_type']}", _coerce_json(payload))
    return record


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def _coerce_json(value: Any, key: str | None = None) -> Any:
    """Money amounts from JSON strings or numbers to Decimal, ISO ``*_at`` strings to datetimes."""
    if isinstance(value, Mapping):
        return {k: _coerce_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce_json(v, key) for v in value]
    if key == "amount" and isinstance(value, (str, int, float)):
        return _bounded_decimal(str(value))
    if key is not None and key.endswith("_at") and isinstance(value, str):
        return _parse_timestamp(value)
    return value


def _bounded_decimal(text: str) -> Decimal:
    """``text`` as a finite Decimal of bounded size; ``ValueError`` otherwise."""
    if len(text) > 2 * MAX_DECIMAL_DIGITS:
        raise ValueError(f"amount has {len(text)} characters, more than {2 * MAX_DECIMAL_DIGITS}")
    try:
        amount = Decimal(text)
    except ArithmeticError as exc:
        raise ValueError(f"amount {text!r} is not a number") from exc
    if not amount.is_finite():
        raise ValueError(f"amount {text!r} is not finite")
    if abs(amount.adjusted()) > MAX_DECIMAL_DIGITS or len(amount.as_tuple().digits) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"amount {text!r} has more than {MAX_DECIMAL_DIGITS} digits or a larger exponent")
    return amount


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests containers deeper than ``limit``; iterative, so never recursion."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


Encoding = Literal["auto", "registry", "embedded", "json"]
ENCODINGS: tuple[Encoding, ...] = ("auto", "registry", "embedded", "json")

#: The framings each encoding accepts; ``auto`` tells the two Avro framings apart by their first bytes.
_ACCEPTS: Mapping[str, frozenset[str]] = {
    "auto": frozenset({"registry", "embedded"}),
    "registry": frozenset({"registry"}),
    "embedded": frozenset({"embedded"}),
    "json": frozenset({"json"}),
}


class EventDecoder:
    """Decodes record values into `CustomerEvent`s; a callable ``(bytes, topic=None) -> CustomerEvent``.

    Each topic has an encoding (``encodings``, else ``default_encoding``): ``registry`` reads the
    Confluent wire format with the writer schema from the registry, ``embedded`` reads Avro
    single-object encoding with writer schemas from ``avro/``, ``auto`` reads either, ``json``
    reads the JSON form ``eventflow produce --file`` takes. Every failure raises a subclass of
    `DecodeError` carrying the raw bytes, except an unreachable registry, which raises the
    transient `RegistryUnavailableError`.
    """

    def __init__(self, schemas: SchemaSet, registry_lookup: WriterSchemaLookup | None = None, *,
                 encodings: Mapping[str, Encoding] | None = None, default_encoding: Encoding = "auto") -> None:
        self._schemas = schemas
        self._registry_lookup = registry_lookup
        self._encodings = dict(encodings or {})
        self._default_encoding = default_encoding
        self._by_fingerprint: dict[bytes, ParsedSchema] = {**schemas.writers, schemas.fingerprint: schemas.envelope}
        self._problems: dict[int, tuple[ParsedSchema, list[Incompatibility]]] = {}
        # id(writer) -> (writer, whether its leading fields let the event type be peeked); the writer is
        # held so that its id cannot be reused by another schema while the entry lives.
        self._peekable: dict[int, tuple[ParsedSchema, bool]] = {}

    @property
    def registry_lookup(self) -> WriterSchemaLookup | None:
        """The registry lookup this decoder asks for Confluent schema ids, if any."""
        return self._registry_lookup

    def add_writer(self, fingerprint: bytes, schema: ParsedSchema) -> None:
        """Makes an older or newer writer schema known by its single-object fingerprint."""
        self._by_fingerprint[fingerprint] = schema

    def encoding(self, topic: str | None) -> Encoding:
        """The encoding records of ``topic`` are read with."""
        return self._encodings.get(topic, self._default_encoding) if topic is not None else self._default_encoding

    def __call__(self, raw: bytes, topic: str | None = None) -> CustomerEvent:
        match self.decode_wanted(raw, topic, wanted=None):
            case CustomerEvent() as event:
                return event
            case Unwanted():
                raise AssertionError("every type is wanted when none is named")

    def needs_registry(self, raw: bytes, topic: str | None) -> bool:
        """Whether decoding ``raw`` would ask the registry over the network (an id not yet cached).

        Such a decode blocks for up to the registry timeout, so async callers run it in a thread.
        """
        if (self._registry_lookup is None or len(raw) < 5 or raw[0] != CONFLUENT_MAGIC
                or "registry" not in _ACCEPTS[self.encoding(topic)]):
            return False
        if self.encoding(topic) == "auto" and raw[:2] == SINGLE_OBJECT_MAGIC:
            return False
        is_cached = getattr(self._registry_lookup, "is_cached", None)
        return not (callable(is_cached) and is_cached(int.from_bytes(raw[1:5], "big")))

    def needs_registry_for(self, record: KafkaRecord) -> bool:
        """`needs_registry` for a consumed record (the `events.sources.RecordDecoder` protocol)."""
        return self.needs_registry(record.value, record.topic)

    def decode_record(self, record: KafkaRecord, wanted: Container[str] | None) -> Decoded:
        """`decode_wanted` for a consumed record (the `events.sources.RecordDecoder` protocol)."""
        return self.decode_wanted(record.value, record.topic, wanted)

    def decode_wanted(self, raw: bytes, topic: str | None, wanted: Container[str] | None) -> Decoded:
        """Decodes and checks the record, but builds the `CustomerEvent` only for ``wanted`` event types.

        For any other type it returns just the type name as `Unwanted`, read from the body's leading ``event_type``
        field without decoding the rest (`_peek_event_type`): nobody pays for an event nobody listens
        to. A record whose leading fields cannot be read that way is read whole and checked as before.

        Raises:
            DecodeError: for every fault of the record, whatever failed inside the decoder (an
                unanticipated exception becomes an `InvalidEventError` naming its type).
            RegistryUnavailableError: the registry could not answer; transient.
        """
        try:
            return self._decode_wanted(raw, topic, wanted)
        except (DecodeError, RegistryUnavailableError):
            raise
        except RecursionError as exc:
            raise InvalidEventError("value is nested too deeply to decode", raw) from exc
        except Exception as exc:  # the decoder's contract is a typed error for any input, never a crash
            raise InvalidEventError(f"undecodable value: {type(exc).__name__}: {str(exc)[:200]}", raw) from exc

    def _decode_wanted(self, raw: bytes, topic: str | None, wanted: Container[str] | None) -> Decoded:
        encoding = self.encoding(topic)
        if not raw:
            raise TruncatedMessageError("empty value", raw)
        if encoding == "json":
            event = self._decode_json(raw)
            return event if wanted is None or event.event_type in wanted else Unwanted(event.event_type)
        accepts = _ACCEPTS[encoding]
        if raw[:2] == SINGLE_OBJECT_MAGIC and "embedded" in accepts:
            if len(raw) < 10:
                raise TruncatedMessageError("single-object header shorter than 10 bytes", raw)
            writer = self._by_fingerprint.get(raw[2:10])
            if writer is None:
                raise UnknownSchemaError(f"unknown schema fingerprint {raw[2:10].hex()}", raw)
            body_start = 10
        elif raw[0] == CONFLUENT_MAGIC and "registry" in accepts:
            if len(raw) < 5:
                raise TruncatedMessageError("Confluent header shorter than 5 bytes", raw)
            schema_id = int.from_bytes(raw[1:5], "big")
            if self._registry_lookup is None:
                raise UnknownSchemaError(f"schema id {schema_id} but no schema registry is configured", raw)
            writer = self._registry_lookup(schema_id, raw)
            body_start = 5
        else:
            expected = " or ".join(sorted(_FRAMING_NAMES[a] for a in accepts))
            raise UnknownMagicByteError(f"unknown magic byte 0x{raw[0]:02x} (topic expects {expected})", raw)
        if wanted is not None:
            peeked = self._peek_event_type(raw, body_start, writer)
            if peeked is not None and peeked not in wanted:
                return Unwanted(peeked)
        record = self._read_body(raw, body_start, writer)
        event_type = _checked_event_type(record, raw)
        if wanted is not None and event_type not in wanted:
            return Unwanted(event_type)
        return _to_event(record, event_type)

    def _peek_event_type(self, raw: bytes, start: int, writer: ParsedSchema) -> str | None:
        """The ``event_type`` string read from the body's first two fields, before the rest of it.

        Only for a writer whose first fields are ``event_id`` and ``event_type`` (every envelope
        version so far) and only when the text is one of the envelope's event types; otherwise None
        and the body is read whole. An unwanted record then costs two length-prefixed reads instead of
        a full Avro decode, at the price that the rest of its body is not checked for poison.
        """
        known = self._peekable.get(id(writer))
        if known is None or known[0] is not writer:
            if len(self._peekable) >= 1024:
                self._peekable.clear()
            known = self._peekable[id(writer)] = (writer, _leads_with_id_and_type(writer))
        if not known[1]:
            return None
        _, after_id = _string_span(raw, start)
        begin, end = _string_span(raw, after_id)
        if end < 0:
            return None
        try:
            text = raw[begin:end].decode()
        except UnicodeDecodeError:
            return None
        return text if text in self._schemas.event_types else None

    def _decode_body(self, raw: bytes, start: int, writer: ParsedSchema) -> CustomerEvent:
        record = self._read_body(raw, start, writer)
        return _to_event(record, _checked_event_type(record, raw))

    def _read_body(self, raw: bytes, start: int, writer: ParsedSchema) -> dict[str, Any]:
        body = io.BytesIO(raw)
        body.seek(start)
        try:
            record = schemaless_reader(body, writer, self._schemas.envelope, return_record_name=True)
        except FastavroResolutionError as exc:
            raise self._resolution_error(raw, start, writer) from exc
        except EOFError as exc:
            raise TruncatedMessageError(f"Avro body ends early at byte {body.tell()}", raw) from exc
        except UnicodeDecodeError as exc:
            raise InvalidEventError(f"string field is not UTF-8: {exc.reason}", raw) from exc
        except IndexError as exc:
            raise InvalidEventError("union branch or enum symbol index out of range", raw) from exc
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, MemoryError, ArithmeticError,
                StopIteration) as exc:
            raise InvalidEventError(f"Avro body is malformed: {type(exc).__name__}: {str(exc)[:200]}", raw) from exc
        if body.tell() != len(raw):
            raise InvalidEventError(f"{len(raw) - body.tell()} trailing bytes after the Avro body", raw)
        return cast(dict[str, Any], record)

    def _resolution_error(self, raw: bytes, start: int, writer: ParsedSchema) -> DecodeError:
        """Says precisely why this record's writer schema does not resolve against the reader schema."""
        branch = _written_branch(raw, start, writer)
        if branch is not None and branch not in self._schemas.event_types:
            return UnknownEventTypeError(f"event type {branch} is not defined in Eventflow's schemas", raw)
        known = self._problems.get(id(writer))
        if known is None or known[0] is not writer:  # holding the writer keeps its id from being reused
            known = self._problems[id(writer)] = (writer, check(self._schemas.envelope, writer))
        problems = known[1]
        relevant = [p for p in problems if ".payload[" not in p.path or (branch and f".payload[{branch}]" in p.path)]
        missing = [p for p in relevant if p.kind == "missing_field"]
        if missing:
            return MissingFieldError("; ".join(str(p) for p in missing), raw)
        if relevant:
            return SchemaResolutionError("; ".join(str(p) for p in relevant), raw)
        return SchemaResolutionError("writer schema does not resolve against the reader schema", raw)

    def _decode_json(self, raw: bytes) -> CustomerEvent:
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidEventError(f"value is not JSON: {exc}", raw) from exc
        except RecursionError as exc:
            raise InvalidEventError(f"JSON value is nested deeper than {MAX_JSON_DEPTH} levels", raw) from exc
        if not isinstance(event, dict):
            raise InvalidEventError("JSON value is not an object", raw)
        if _depth_exceeds(event, MAX_JSON_DEPTH):
            raise InvalidEventError(f"JSON value is nested deeper than {MAX_JSON_DEPTH} levels", raw)
        for name in ("event_id", "event_type", "occurred_at", "customer"):
            if name not in event:
                raise MissingFieldError(f"CustomerEvent.{name} is missing", raw)
        if not isinstance(event["event_type"], str):
            raise InvalidEventError(f"CustomerEvent.event_type is a {type(event['event_type']).__name__}, "
                                    "not a string", raw)
        if event["event_type"] not in self._schemas.event_types:
            raise UnknownEventTypeError(f"event type {event['event_type']!r} is not defined in Eventflow's schemas",
                                        raw)
        try:
            record = record_from_json(event)
            validate(record, self._schemas.envelope, raise_errors=True)
            encoded = encode_single_object(record, self._schemas)
        except ValidationError as exc:
            raise InvalidEventError(f"JSON event does not match the schema: {exc}", raw) from exc
        except (KeyError, ValueError, TypeError, AttributeError, ArithmeticError) as exc:
            raise InvalidEventError(f"JSON event does not match the schema: {exc!r}", raw) from exc
        # Round-tripping through Avro gives JSON events exactly the normalisation Avro events get.
        try:
            return self._decode_body(encoded, len(SINGLE_OBJECT_MAGIC) + len(self._schemas.fingerprint),
                                     self._schemas.envelope)
        except DecodeError as exc:
            raise type(exc)(exc.reason, raw) from exc


def _leads_with_id_and_type(writer: ParsedSchema) -> bool:
    fields = writer.get("fields") if isinstance(writer, dict) else None
    if not isinstance(fields, list) or len(fields) < 2:
        return False
    return all(isinstance(f, dict) and f.get("name") == name and _is_string(f.get("type"))
               for f, name in zip(fields[:2], ("event_id", "event_type"), strict=True))


def _is_string(avro_type: object) -> bool:
    return avro_type == "string" or isinstance(avro_type, dict) and avro_type.get("type") == "string"


def _string_span(raw: bytes, pos: int) -> tuple[int, int]:
    """Where the Avro string at ``pos`` (zig-zag varint length, then bytes) starts and ends; (-1, -1) if
    ``pos`` is -1 or the string is cut short, negative or its length too long for a varint."""
    if pos < 0:
        return -1, -1
    length, shift = 0, 0
    while pos < len(raw) and shift <= 63:
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            length = (length >> 1) ^ -(length & 1)
            return (pos, pos + length) if 0 <= length <= len(raw) - pos else (-1, -1)
        shift += 7
    return -1, -1


_FRAMING_NAMES = {"registry": "Confluent wire format (0x00)", "embedded": "Avro single-object (0xc3 0x01)",
                  "json": "JSON"}


def _written_branch(raw: bytes, start: int, writer: ParsedSchema) -> str | None:
    """The payload record the writer wrote, read with the writer schema alone; None if unreadable."""
    try:
        record = schemaless_reader(io.BytesIO(raw[start:]), writer, None, return_record_name=True)
        payload = record.get("payload") if isinstance(record, dict) else None
        if isinstance(payload, tuple) and isinstance(payload[0], str):
            return payload[0].rsplit(".", 1)[-1]
    except Exception:  # noqa: BLE001 - only a hint for the error message; the caller raises the typed error
        return None
    return None


def _checked_event_type(record: dict[str, Any], raw: bytes) -> str:
    """Applies the envelope rules Avro cannot express; returns the event type."""
    payload_type = record["payload"][0].rsplit(".", 1)[-1]
    if record["event_type"] != payload_type:
        raise InvalidEventError(
            f"event_type {record['event_type']!r} does not match payload record {payload_type!r}", raw
        )
    if not record["customer"]["id"]:
        raise InvalidEventError("customer.id is empty", raw)
    return str(payload_type)


def _to_event(record: dict[str, Any], payload_type: str) -> CustomerEvent:
    payload = record["payload"][1]
    customer = record["customer"]
    occurred_at = record["occurred_at"]
    return CustomerEvent(
        event_id=str(record["event_id"]),
        event_type=payload_type,
        occurred_at=occurred_at.isoformat() if isinstance(occurred_at, dt.datetime) else str(occurred_at),
        customer=Customer(**{k: customer.get(k) for k in ("id", "email", "phone", "first_name")},
                          timezone=customer.get("timezone") or "UTC", locale=customer.get("locale") or "en"),
        payload={k: json_safe(v) for k, v in payload.items()},
    )


def decode_error_type(error: DecodeError) -> str:
    """The stable, bounded-cardinality name of a decode error, for metrics and DLQ headers."""
    return type(error).__name__
