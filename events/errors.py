"""Typed decode errors: each carries where the record came from and its original bytes.

The consumer dead-letters any `DecodeError` with ``raw`` intact; `RegistryUnavailableError` is
transient and is retried instead.
"""

from __future__ import annotations

from core.errors import EventflowError


class DecodeError(EventflowError):
    """A record's value could not be turned into a `CustomerEvent`.

    Attributes:
        reason: human-readable cause, exact enough to act on.
        raw: the record's value bytes, unchanged.
        topic, partition, offset: the record's position, when known.
    """

    def __init__(
        self, reason: str, raw: bytes, *, topic: str | None = None, partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def at(self, topic: str, partition: int, offset: int) -> DecodeError:
        """Records the position of the failing record; returns self for ``raise err.at(...)``."""
        self.topic, self.partition, self.offset = topic, partition, offset
        return self


class TruncatedMessageError(DecodeError):
    """The bytes end before the framing or the Avro body does."""


class UnknownMagicByteError(DecodeError):
    """The first bytes are neither the Confluent nor the Avro single-object framing."""


class UnknownSchemaError(DecodeError):
    """The writer schema id or fingerprint is not known to the registry or to ``avro/``."""


class SchemaResolutionError(DecodeError):
    """The writer schema cannot be resolved against Eventflow's reader schema."""


class MissingFieldError(DecodeError):
    """A field the reader requires has no value and no default."""


class UnknownEventTypeError(DecodeError):
    """The payload is of an event type Eventflow's schemas do not define."""


class InvalidEventError(DecodeError):
    """The record decoded but breaks an envelope rule (e.g. event_type disagrees with the payload)."""


class RegistryUnavailableError(EventflowError):
    """The schema registry could not be reached; transient, never a reason to dead-letter."""
