"""Publishing customer events: validated against the schema, keyed by customer id, idempotent.

Upstream services can import `EventProducer`; ``eventflow produce`` is the same code on the
command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from fastavro.validation import ValidationError, validate

from eventflow.errors import EventflowError
from events.codec import encode_single_object, record_from_json
from events.schemas import SchemaSet


class InvalidRecordError(EventflowError):
    """A record does not match the event schema; nothing was sent."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"record does not match the CustomerEvent schema: {problem}")
        self.problem = problem


class DeliveryError(EventflowError):
    """The broker did not acknowledge a record."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event {event_id} was not delivered: {reason}")
        self.event_id = event_id
        self.reason = reason


def encode_event(event: Mapping[str, Any], schemas: SchemaSet) -> bytes:
    """Validates a JSON-form event and returns its single-object Avro encoding."""
    try:
        record = record_from_json(event)
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidRecordError(repr(exc)) from exc
    try:
        validate(record, schemas.envelope, raise_errors=True)
    except ValidationError as exc:
        raise InvalidRecordError(str(exc)) from exc
    return encode_single_object(record, schemas)


class EventProducer:
    """Sends customer events to one topic with ``enable.idempotence`` and ``acks=all``."""

    def __init__(self, client_config: Mapping[str, str], topic: str, schemas: SchemaSet) -> None:
        self.topic = topic
        self._schemas = schemas
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all",
                                   "linger.ms": 5, "compression.type": "lz4"})
        self.failures: list[DeliveryError] = []

    def send(self, event: Mapping[str, Any]) -> None:
        """Queues one event; delivery failures are collected in ``failures`` (see `flush`)."""
        value = encode_event(event, self._schemas)
        event_id = str(event["event_id"])

        def on_delivery(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                self.failures.append(DeliveryError(event_id, err.str()))

        while True:
            try:
                self._producer.produce(self.topic, value=value, key=str(event["customer"]["id"]).encode(),
                                       on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Sends bytes as they are (tests and tooling use it to publish malformed records)."""
        self._producer.produce(self.topic, value=value, key=key)

    def flush(self, timeout_seconds: float = 30.0) -> None:
        """Waits for every queued event; raises the first `DeliveryError` if any failed."""
        remaining = self._producer.flush(timeout_seconds)
        if remaining:
            raise DeliveryError("*", f"{remaining} events still queued after {timeout_seconds}s")
        if self.failures:
            raise self.failures[0]

    async def flush_async(self, timeout_seconds: float = 30.0) -> None:
        await asyncio.to_thread(self.flush, timeout_seconds)
