"""Reading and replaying the dead-letter topic (``eventflow dlq inspect`` / ``eventflow dlq replay``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import Consumer, Producer

from consumer.dead_letter import HEADER_PREFIX, Headers, parse_dead_letter_headers
from consumer.kafka_loop import FixedAssignment, Handoff, KafkaLoop, KafkaReadError, LoopOptions, run_blocking
from consumer.record import SourceRecord
from core.logs import mask_contact_details

log = structlog.get_logger(__name__)

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


def _dead_letter(record: SourceRecord) -> DeadLetter:
    headers = list(record.headers)
    meta = parse_dead_letter_headers(headers)
    return DeadLetter(
        partition=record.partition, offset=record.offset, key=record.key, value=record.value,
        source_topic=meta.get("source_topic", ""), source_partition=int(meta.get("source_partition", -1)),
        source_offset=int(meta.get("source_offset", -1)), error_type=meta.get("error_type", ""),
        error_message=meta.get("error_message", ""),
        original_headers=tuple((k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)),
    )


def read_dead_letters(client_config: Mapping[str, str], topic: str, *, idle_timeout_seconds: float = 3.0,
                      unique_sources: bool = True) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic from the beginning, read on the shared loop with no group commits.

    With ``unique_sources`` (the default) each source record is yielded once, the first time it
    was dead-lettered: topics written before dead letters were deduplicated on provenance can
    hold a record twice, and it must be shown and replayed once. A read that gets nothing for
    ``idle_timeout_seconds`` before the end yields what it read and logs where it stopped.
    """
    probe = Consumer({**client_config, "group.id": "eventflow-dlq-probe", "log_level": 0})
    try:
        metadata = probe.list_topics(topic, timeout=10).topics.get(topic)
    finally:
        probe.close()
    if metadata is None or metadata.error is not None:
        return
    collect = _Collect()
    loop = KafkaLoop(FixedAssignment(dict.fromkeys(((topic, p) for p in metadata.partitions), 0)), collect,
                     LoopOptions(name="dlq-reader", stop_at_end=True, idle_timeout_seconds=idle_timeout_seconds),
                     client_config=client_config)
    try:
        run_blocking(lambda: loop.run(asyncio.Event()))
    except KafkaReadError as exc:
        log.warning("dead_letter_read_incomplete", topic=topic, problem=exc.problem)
    seen: set[tuple[str, int, int]] = set()
    for record in sorted(collect.items, key=lambda d: (d.partition, d.offset)):
        source = (record.source_topic, record.source_partition, record.source_offset)
        if unique_sources and source[0] and source[2] >= 0:
            if source in seen:
                continue
            seen.add(source)
        yield record


class _Collect(Handoff[DeadLetter]):
    def __init__(self) -> None:
        self.items: list[DeadLetter] = []

    def decode(self, record: SourceRecord) -> DeadLetter:
        return _dead_letter(record)

    async def hand_off(self, records: Sequence[SourceRecord], items: Sequence[DeadLetter]) -> None:
        self.items.extend(items)


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
