"""Publishes records that cannot be processed to the dead-letter topic, bytes and key unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, Message, Producer

from eventflow.errors import EventflowError

HEADER_PREFIX = "eventflow.dlq."


class DeadLetterPublishError(EventflowError):
    """The dead-letter topic did not accept a record; transient, the source offset stays uncommitted."""


def dead_letter_headers(message: Message, error_type: str, reason: str) -> list[tuple[str, bytes]]:
    """Headers naming where the record came from and why it was dead-lettered."""
    original = [(k, v if isinstance(v, bytes) else b"") for k, v in (message.headers() or [])]
    return original + [
        (f"{HEADER_PREFIX}source_topic", str(message.topic()).encode()),
        (f"{HEADER_PREFIX}source_partition", str(message.partition()).encode()),
        (f"{HEADER_PREFIX}source_offset", str(message.offset()).encode()),
        (f"{HEADER_PREFIX}error_type", error_type.encode()),
        (f"{HEADER_PREFIX}error_message", reason.encode("utf-8", "replace")[:4096]),
        (f"{HEADER_PREFIX}failed_at_ms", str(int(time.time() * 1000)).encode()),
    ]


def parse_dead_letter_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``eventflow.dlq.*`` headers of a dead-letter record, without their prefix."""
    return {
        key[len(HEADER_PREFIX):]: value.decode("utf-8", "replace")
        for key, value in headers or []
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
