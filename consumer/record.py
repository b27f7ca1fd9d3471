"""One polled Kafka record as plain data, and the typed result of handling it."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from consumer.dispatch import Outcome

#: Kafka record headers as confluent-kafka hands them out and accepts them.
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class SourceRecord:
    """A consumed record: where it came from and its bytes, independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, str | bytes | None], ...] = ()
    #: The record's Kafka timestamp in epoch milliseconds; None when the broker gave none.
    timestamp_ms: int | None = None

    @classmethod
    def from_message(cls, message: Message) -> SourceRecord:
        """Copies what the consumer needs out of a confluent-kafka message."""
        headers = message.headers()
        pairs = tuple(headers.items() if isinstance(headers, dict) else headers or ())
        kind, timestamp = message.timestamp()
        return cls(topic=str(message.topic()), partition=int(message.partition() or 0),
                   offset=int(message.offset() or 0), key=message.key(), value=message.value() or b"",
                   headers=pairs, timestamp_ms=timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None)

    @property
    def position(self) -> str:
        """``topic[partition]@offset`` for logs."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Handled:
    """Every routed action was applied to Temporal."""

    event_type: str
    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True)
class Unrouted:
    """The record decoded, but no journey listens to its event type."""

    event_type: str


@dataclass(frozen=True)
class DeadLettered:
    """The record is on the dead-letter topic (now, or already by an earlier, killed consumer)."""

    error_type: str
    reason: str
    event_type: str = "unknown"
    deduplicated: bool = False


#: How a record ended; there is no fourth way: transient failures are retried inside the handler.
HandlerResult = Handled | Unrouted | DeadLettered
