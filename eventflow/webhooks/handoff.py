"""The durable hand-off: a verified request's records are on the feedback topic before the provider hears 2xx.

The producer is idempotent with ``acks=all``, and every request flushes its own records and
checks each delivery report before answering; a request whose records were not all acknowledged
is answered 503, so the provider retries (and the ledger's report ids make the retry harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import KafkaError, Message, Producer

from consumer.feedback import FeedbackMessage, encode_message
from core.errors import EventflowError


class HandoffError(EventflowError):
    """Some records were not acknowledged by the brokers in time."""

    def __init__(self, failed: int, reason: str) -> None:
        super().__init__(f"{failed} feedback records not acknowledged: {reason}")
        self.failed = failed
        self.reason = reason


class KafkaHandoff:
    """Writes feedback records to the topic and waits for the brokers' acknowledgement.

    Args:
        before_flush: called (in the producing thread) after the records are queued and before
            they are flushed; the crash test stops the process there.
    """

    def __init__(self, client_config: Mapping[str, str], topic: str, *, timeout_seconds: float = 8.0,
                 before_flush: Callable[[], None] | None = None) -> None:
        self._producer = Producer({**client_config, "enable.idempotence": True, "acks": "all",
                                   "linger.ms": 2, "message.timeout.ms": int(timeout_seconds * 1000),
                                   "logger": logging.getLogger("librdkafka")})
        self._topic = topic
        self._timeout = timeout_seconds
        self._before_flush = before_flush

    @property
    def topic(self) -> str:
        return self._topic

    async def publish(self, messages: Sequence[FeedbackMessage]) -> None:
        """Returns once every record is acknowledged; raises `HandoffError` otherwise."""
        if messages:
            await asyncio.to_thread(self._publish_blocking, list(messages))

    def _publish_blocking(self, messages: list[FeedbackMessage]) -> None:
        errors: list[str] = []
        acknowledged: list[int] = []

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                errors.append(error.name())
            else:
                acknowledged.append(1)

        for message in messages:
            self._producer.produce(self._topic, key=message.key.encode(), value=encode_message(message),
                                   on_delivery=delivered)
        if self._before_flush is not None:
            self._before_flush()
        self._producer.flush(self._timeout)
        if errors or len(acknowledged) < len(messages):
            raise HandoffError(len(messages) - len(acknowledged), ", ".join(sorted(set(errors))) or "timed out")

    def close(self) -> None:
        self._producer.flush(self._timeout)
