"""Reading and replaying the dead-letter topic (``eventflow dlq inspect`` / ``eventflow dlq replay``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.dead_letter import HEADER_PREFIX, Headers, header_list, parse_dead_letter_headers
from core.logs import mask_contact_details

REPLAYED_HEADER = "eventflow.replayed_from"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record with its provenance."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    error_type: str
    error_message: str
    original_headers: tuple[tuple[str, str | bytes | None], ...]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def describe(self, preview_bytes: int = 64) -> str:
        """A readable, single-record summary with contact details masked."""
        preview = self.value[:preview_bytes]
        printable = preview.decode("utf-8", "replace") if preview.isascii() else preview.hex(" ")
        return (
            f"dlq {self.position}  <- {self.source_topic}[{self.source_partition}]@{self.source_offset}\n"
            f"  error: {self.error_type}: {mask_contact_details(self.error_message)}\n"
            f"  key: {mask_contact_details((self.key or b'').decode('utf-8', 'replace'))}  "
            f"value: {len(self.value)} bytes: {mask_contact_details(printable)}"
            f"{'...' if len(self.value) > preview_bytes else ''}"
        )


def read_dead_letters(client_config: Mapping[str, str], topic: str, *, idle_timeout_seconds: float = 3.0,
                      unique_sources: bool = True) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic from the beginning; reads with no group commits.

    With ``unique_sources`` (the default) each source record is yielded once, the first time it
    was dead-lettered: topics written before dead letters were deduplicated on provenance can
    hold a record twice, and it must be shown and replayed once.
    """
    consumer = Consumer({**client_config, "group.id": f"eventflow-dlq-reader-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        consumer.close()
        return
    partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    consumer.assign(partitions)
    remaining = {p for p, end in ends.items() if end > 0}
    seen: set[tuple[str, int, int]] = set()
    deadline = time.monotonic() + idle_timeout_seconds
    try:
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                deadline = time.monotonic() + idle_timeout_seconds
                partition, offset = int(message.partition() or 0), int(message.offset() or 0)
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
                headers = header_list(message.headers())
                meta = parse_dead_letter_headers(headers)
                source = (meta.get("source_topic", ""), int(meta.get("source_partition", -1)),
                          int(meta.get("source_offset", -1)))
                if unique_sources and source[0] and source[2] >= 0:
                    if source in seen:
                        continue
                    seen.add(source)
                yield DeadLetter(
                    partition=partition, offset=offset, key=message.key(), value=message.value() or b"",
                    source_topic=meta.get("source_topic", ""), source_partition=int(meta.get("source_partition", -1)),
                    source_offset=int(meta.get("source_offset", -1)), error_type=meta.get("error_type", ""),
                    error_message=meta.get("error_message", ""),
                    original_headers=tuple((k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)),
                )
    finally:
        consumer.close()


def replay(client_config: Mapping[str, str], dead_letters: list[DeadLetter], *,
           on_replayed: Callable[[DeadLetter], None] | None = None) -> int:
    """Re-publishes records to their source topics, key and bytes unchanged; returns how many.

    Replay is safe because the consumer dedupes by deterministic workflow ID.
    """
    producer = Producer({**client_config, "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    for record in dead_letters:
        if not record.source_topic:
            failures.append(f"{record.position}: no source topic header")
            continue
        headers: Headers = [*record.original_headers, (REPLAYED_HEADER, record.position.encode())]

        def delivered(err: object, _: object, record: DeadLetter = record) -> None:
            if err is not None:
                failures.append(f"{record.position}: {err}")
            elif on_replayed is not None:
                on_replayed(record)

        producer.produce(record.source_topic, value=record.value, key=record.key, headers=headers,
                         on_delivery=delivered)
        producer.poll(0)
    producer.flush(30)
    if failures:
        raise RuntimeError("replay failed for " + "; ".join(failures))
    return len(dead_letters)
