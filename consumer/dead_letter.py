"""Publishes records that cannot be processed to the dead-letter topic, bytes and key unchanged.

Every source partition's dead letters go to one dead-letter partition (chosen from the source
topic and partition), so the records an earlier, killed consumer already dead-lettered for a
source partition can be found by reading one partition from a known offset (`DeadLetterLedger`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping

from confluent_kafka import KafkaError, Message, Producer

from consumer.record import Headers, SourceRecord
from core.errors import EventflowError

HEADER_PREFIX = "eventflow.dlq."
#: Longest error message kept in a header; reasons can quote large parts of the record.
MAX_REASON_BYTES = 4096


class DeadLetterPublishError(EventflowError):
    """The dead-letter topic did not accept a record; transient, the source offset stays uncommitted."""


def dead_letter_headers(record: SourceRecord, error_type: str, reason: str) -> Headers:
    """Headers naming where the record came from and why it was dead-lettered."""
    return list(record.headers) + [
        (f"{HEADER_PREFIX}source_topic", record.topic.encode()),
        (f"{HEADER_PREFIX}source_partition", str(record.partition).encode()),
        (f"{HEADER_PREFIX}source_offset", str(record.offset).encode()),
        (f"{HEADER_PREFIX}error_type", error_type.encode()),
        (f"{HEADER_PREFIX}error_message", reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
        (f"{HEADER_PREFIX}failed_at_ms", str(int(time.time() * 1000)).encode()),
    ]


def header_list(headers: Headers | dict[str, str | bytes | None] | None) -> Headers:
    """Headers as a list of pairs, whichever form confluent-kafka gave them in."""
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def parse_dead_letter_headers(headers: Headers | dict[str, str | bytes | None] | None) -> dict[str, str]:
    """The ``eventflow.dlq.*`` headers of a dead-letter record, without their prefix."""
    return {
        key[len(HEADER_PREFIX):]: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for key, value in header_list(headers)
        if key.startswith(HEADER_PREFIX) and value is not None
    }


def dead_letter_partition(source_topic: str, source_partition: int, partitions: int) -> int:
    """The dead-letter partition that holds every dead letter of one source partition."""
    return zlib.crc32(f"{source_topic}\x00{source_partition}".encode()) % partitions


class DeadLetterPublisher:
    """An idempotent producer for the dead-letter topic."""

    def __init__(self, client_config: Mapping[str, str], topic: str) -> None:
        self.topic = topic
        self.client_config = dict(client_config)
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                   "logger": logging.getLogger("librdkafka")})
        self._partitions: int | None = None

    async def existing_partitions(self) -> int | None:
        """How many partitions the dead-letter topic has; None while it does not exist (asked until it does)."""
        if self._partitions is None:
            # All topics, not ``topic=``: naming one can auto-create it with the broker's defaults.
            metadata = await asyncio.to_thread(self._producer.list_topics, None, 10)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                self._partitions = len(topic.partitions)
        return self._partitions

    async def partitions(self) -> int:
        """How many partitions the dead-letter topic has; about to write, so it may auto-create it."""
        existing = await self.existing_partitions()
        if existing is None:
            # Naming the topic lets a broker that allows it create the topic, as a produce would.
            metadata = await asyncio.to_thread(self._producer.list_topics, self.topic, 10)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise DeadLetterPublishError(f"dead-letter topic {self.topic} is not available: "
                                             f"{topic.error if topic is not None else 'no metadata'}")
            existing = self._partitions = len(topic.partitions)
        return existing

    async def partition_for(self, source_topic: str, source_partition: int) -> int:
        """The dead-letter partition of a source partition."""
        return dead_letter_partition(source_topic, source_partition, await self.partitions())

    async def publish(self, record: SourceRecord, error_type: str, reason: str) -> int:
        """Publishes ``record``'s key and value with provenance headers; returns its dead-letter offset.

        Waits for the broker's acknowledgement. Raises `DeadLetterPublishError` (or the client's
        `BufferError`/`KafkaException`, or `TimeoutError`), all transient for the caller.
        """
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[int] = loop.create_future()

        def on_delivery(err: KafkaError | None, message: Message) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if err is None:
                    delivered.set_result(int(message.offset() or 0))
                else:
                    delivered.set_exception(DeadLetterPublishError(f"dead-letter publish failed: {err.str()}"))
            loop.call_soon_threadsafe(settle)

        self._producer.produce(
            self.topic, value=record.value, key=record.key,
            partition=await self.partition_for(record.topic, record.partition),
            headers=dead_letter_headers(record, error_type, reason), on_delivery=on_delivery,
        )
        try:
            await asyncio.to_thread(self._producer.flush, 30)
            return await asyncio.wait_for(delivered, timeout=30)
        finally:
            # Left before the acknowledgement (cancelled while flushing): a late delivery report then
            # finds the future done instead of setting an error nobody reads.
            delivered.cancel()

    def close(self) -> None:
        self._producer.flush(10)
