"""Publishing customer events: validated against the schema, keyed by customer id, idempotent.

Upstream services can import `EventProducer` (or build one from the environment with
`events.config.build_producer`); ``eventflow produce`` is the same code on the command line.
Values are Avro single-object encoded by default, or framed in the Confluent wire format with the
envelope's registry schema id when a registry client is given.
"""

from __future__ import annotations

import asyncio
import difflib
import io
import json
import logging
import threading
from collections.abc import Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from fastavro import schemaless_writer
from fastavro.validation import ValidationError, ValidationErrorData, validate

from core.errors import EventflowError
from events.codec import CONFLUENT_MAGIC, encode_single_object, record_from_json
from events.registry import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SubjectStrategy,
    call_registry,
    envelope_schema,
    subject_name,
)
from events.schemas import ENVELOPE, NAMESPACE, SchemaSet


class InvalidRecordError(EventflowError):
    """A record does not match the event schema; nothing was sent.

    Attributes:
        problem: what is wrong, in one line (a field and what it holds, never the whole record).
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"record does not match the CustomerEvent schema: {problem}")
        self.problem = problem


class UnknownEventTypeError(InvalidRecordError):
    """The record's ``event_type`` names no payload of the schema.

    Attributes:
        event_type: the type given.
        known: the schema's event types.
    """

    def __init__(self, event_type: object, known: frozenset[str]) -> None:
        close = difflib.get_close_matches(str(event_type), sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown event_type {event_type!r}{hint}; known: {', '.join(sorted(known))}")
        self.event_type = event_type
        self.known = known


class DeliveryError(EventflowError):
    """The broker did not acknowledge a record."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id} was not delivered: {reason}")
        self.event_id = event_id
        self.reason = reason
        self.failures: list[DeliveryError] = []


class SchemaNotRegisteredError(EventflowError):
    """The envelope schema is not registered under the producer's subject and auto-register is off."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"the CustomerEvent schema is not registered under subject {subject}; "
                         "run `eventflow schemas register` or set EVENTFLOW_SCHEMA_REGISTRY_AUTO_REGISTER=true")
        self.subject = subject


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _schema_name(schema: object) -> str:
    """A schema in a few words: ``string``, ``Money``, ``string (uuid)``, ``null or string``."""
    if isinstance(schema, str):
        return schema.rsplit(".", 1)[-1]
    if isinstance(schema, list):
        return " or ".join(_schema_name(branch) for branch in schema)
    if isinstance(schema, dict):
        if "name" in schema:
            return _schema_name(schema["name"])
        logical = f" ({schema['logicalType']})" if "logicalType" in schema else ""
        return f"{_schema_name(schema.get('type'))}{logical}"
    return str(schema)


def _described(error: ValidationErrorData) -> str:
    # fastavro's own text holds the repr of the whole datum and schema (kilobytes for the payload union).
    where = str(error.field).removeprefix(f"{NAMESPACE}.")
    held = "is missing" if error.datum is None else f"holds {_short(error.datum)}"
    return f"{where} {held}, expected {_schema_name(error.schema)}"


def _payload_branch(schemas: SchemaSet, event_type: str) -> dict[str, Any]:
    payload = next(f for f in schemas.envelope["fields"] if f["name"] == "payload")
    return next(b for b in payload["type"] if b["name"] == f"{NAMESPACE}.{event_type}")


def _validated(event: Mapping[str, Any], schemas: SchemaSet) -> dict[str, Any]:
    event_type = event.get("event_type")
    if event_type is None:
        raise InvalidRecordError("event_type is missing")
    if event_type not in schemas.event_types:
        raise UnknownEventTypeError(event_type, schemas.event_types)
    try:
        record = record_from_json(event)
    except KeyError as exc:
        raise InvalidRecordError(f"{exc.args[0]} is missing") from exc
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidRecordError(str(exc)) from exc
    try:
        validate(record, schemas.envelope, raise_errors=True)
    except ValidationError as exc:
        error = exc.errors[0]
        if str(error.field).endswith("CustomerEvent.payload"):
            # The union says only "no branch matched": check the branch event_type names for the field.
            try:
                validate(record["payload"][1], _payload_branch(schemas, str(event_type)), raise_errors=True)
            except ValidationError as branch:
                error = branch.errors[0]
        raise InvalidRecordError(_described(error)) from exc
    return record


def encode_event(event: Mapping[str, Any], schemas: SchemaSet) -> bytes:
    """Validates a JSON-form event and returns its single-object Avro encoding."""
    return encode_single_object(_validated(event, schemas), schemas)


def encode_confluent(event: Mapping[str, Any], schemas: SchemaSet, schema_id: int) -> bytes:
    """Validates a JSON-form event and returns it in the Confluent wire format with ``schema_id``."""
    record = _validated(event, schemas)
    body = io.BytesIO()
    body.write(bytes([CONFLUENT_MAGIC]))
    body.write(schema_id.to_bytes(4, "big"))
    schemaless_writer(body, schemas.envelope, record)
    return body.getvalue()


class EventProducer:
    """Sends customer events to one topic with ``enable.idempotence`` and ``acks=all``.

    Every event is validated against the envelope schema before it is queued (`InvalidRecordError`,
    nothing sent). Delivery failures are collected in ``failures`` and raised by `flush`.

    Args:
        client_config: librdkafka settings (at least ``bootstrap.servers``).
        topic: where events go; the key is the customer id, so one customer's events stay in order.
        schemas: the envelope schema.
        registry: when given, values use the Confluent wire format with the envelope's schema id
            under ``subject_strategy``'s subject.
        auto_register: register the envelope when the subject lacks it (else `SchemaNotRegisteredError`).
        json_values: send the JSON form instead of Avro (for ``json`` topics).
    """

    def __init__(self, client_config: Mapping[str, str], topic: str, schemas: SchemaSet, *,
                 registry: SchemaRegistryClient | None = None, subject_strategy: SubjectStrategy = "topic",
                 auto_register: bool = False, json_values: bool = False) -> None:
        self.topic = topic
        self._schemas = schemas
        self._registry = registry
        self._subject = subject_name(subject_strategy, topic, ENVELOPE)
        self._auto_register = auto_register
        self._json_values = json_values
        self._schema_id: int | None = None
        # librdkafka's own lines ("Coordinator load in progress" on a fresh broker) go to the `librdkafka`
        # logger rather than straight to stderr, so the process's log format and level apply.
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all",
                                   "linger.ms": 5, "compression.type": "lz4",
                                   "logger": logging.getLogger("librdkafka")})
        self._failures_lock = threading.Lock()
        self.failures: list[DeliveryError] = []
        self.delivered = 0

    @property
    def schema_id(self) -> int | None:
        """The registry id values are framed with (registry mode, after the first send)."""
        return self._schema_id

    def _registered_id(self) -> int:
        if self._schema_id is None:
            assert self._registry is not None
            registry, schema = self._registry, envelope_schema(self._schemas.expanded_json())
            if self._auto_register:
                self._schema_id = call_registry(f"register under {self._subject}",
                                                partial(registry.register_schema, self._subject, schema))
            else:
                try:
                    registered = call_registry(f"look up under {self._subject}",
                                               partial(registry.lookup_schema, self._subject, schema))
                except SchemaRegistryError as exc:
                    raise SchemaNotRegisteredError(self._subject) from exc
                if registered.schema_id is None:
                    raise SchemaNotRegisteredError(self._subject)
                self._schema_id = registered.schema_id
        return self._schema_id

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """The value bytes `send` would publish for ``event`` (validated)."""
        if self._json_values:
            _validated(event, self._schemas)
            return json.dumps(dict(event), separators=(",", ":")).encode()
        if self._registry is not None:
            return encode_confluent(event, self._schemas, self._registered_id())
        return encode_event(event, self._schemas)

    def send(self, event: Mapping[str, Any], *, headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        """Queues one event (with record ``headers``, e.g. a ``traceparent``); delivery failures are
        collected in ``failures`` (see `flush`)."""
        value = self.encode(event)
        event_id = str(event["event_id"])

        def on_delivery(err: KafkaError | None, _: Message) -> None:
            with self._failures_lock:
                if err is not None:
                    self.failures.append(DeliveryError(event_id, err.str()))
                else:
                    self.delivered += 1

        while True:
            try:
                self._producer.produce(self.topic, value=value, key=str(event["customer"]["id"]).encode(),
                                       on_delivery=on_delivery, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Sends bytes as they are (tests and tooling use it to publish malformed records)."""
        self._producer.produce(self.topic, value=value, key=key)

    def flush(self, timeout_seconds: float = 30.0) -> None:
        """Waits for every queued event; raises `DeliveryError` if any failed (then forgets them).

        The error names the first failed event and says how many others failed; every failure
        stays available in the error's ``failures``.
        """
        remaining = self._producer.flush(timeout_seconds)
        if remaining:
            raise DeliveryError("*", f"{remaining} events still queued after {timeout_seconds}s")
        with self._failures_lock:
            failures, self.failures = self.failures, []
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""
            error = DeliveryError(first.event_id, first.reason + more)
            error.failures = failures
            raise error

    async def flush_async(self, timeout_seconds: float = 30.0) -> None:
        """`flush` without blocking the event loop."""
        await asyncio.to_thread(self.flush, timeout_seconds)
