"""Publishes records that cannot be processed to the dead-letter topic, bytes and key unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, Message, Producer

from eventflow.errors import EventflowError

HEADER_PREFIX = "eventflow.dlq."

#: Kafka record headers as confluent-kafka hands them out and accepts them.
Headers = list[tuple[str, str | bytes | None]]


class DeadLetterPublishError(EventflowError):
    """The dead-letter topic did not accept a record; transient, the source offset stays uncommitted."""


def dead_letter_headers(message: Message, error_type: str, reason: str) -> Headers:
    """Headers naming where the record came from and why it was dead-lettered."""
    original = list(header_list(message.headers()))
    return original + [
        (f"{HEADER_PREFIX}source_topic", str(message.topic()).encode()),
        (f"{HEADER_PREFIX}source_partition", str(message.partition()).encode()),
        (f"{HEADER_PREFIX}source_offset", str(message.offset()).encode()),
        (f"{HEADER_PREFIX}error_type", error_type.encode()),
        (f"{HEADER_PREFIX}error_message", reason.encode("utf-8", "replace")[:4096]),
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


class DeadLetterPublisher:
    """An idempotent producer for the dead-letter topic."""

    def __init__(self, client_config: Mapping[str, str], topic: str) -> None:
        self.topic = topic
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5})

    async def publish(self, message: Message, error_type: str, reason: str) -> None:
        """Publishes ``message``'s key and value with provenance headers; waits for the broker's ack."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _: Message) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if err is None:
                    delivered.set_result(None)
                else:
                    delivered.set_exception(DeadLetterPublishError(f"dead-letter publish failed: {err.str()}"))
            loop.call_soon_threadsafe(settle)

        self._producer.produce(
            self.topic, value=message.value(), key=message.key(),
            headers=dead_letter_headers(message, error_type, reason), on_delivery=on_delivery,
        )
        await asyncio.to_thread(self._producer.flush, 30)
        await asyncio.wait_for(delivered, timeout=30)

    def close(self) -> None:
        self._producer.flush(10)
