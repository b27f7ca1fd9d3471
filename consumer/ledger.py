"""Dead letters written once per source record, even when a consumer is killed mid-stream.

A consumer killed after dead-lettering a record but before committing its offset leaves the
record to the next owner of the partition, which would dead-letter it again. The ledger prevents
that with the provenance headers every dead letter carries:

* all dead letters of one source partition go to one dead-letter partition
  (`consumer.dead_letter.dead_letter_partition`);
* every offset commit stores, as commit metadata, a dead-letter offset ``D`` below every dead
  letter written for a source offset at or after the committed position (the lowest such dead
  letter, or the end of the dead-letter partition as this member last knew it);
* when a partition is assigned, the ledger reads its dead-letter partition from ``D`` to the end
  and remembers which source offsets at or after the committed position are already there. A
  record found there is not written again (`DeadLetterReceipt.deduplicated`).

Until a partition's ledger is loaded, its offsets are not committed (`commit_metadata` returns
None) and its dead letters wait, so the guarantee holds from the first record.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, TopicPartition

from consumer.dead_letter import DeadLetterPublisher, dead_letter_partition, parse_dead_letter_headers
from consumer.handler import DeadLetterReceipt
from consumer.kafka_loop import FixedAssignment, Handoff, KafkaLoop, LoopOptions
from consumer.metrics import ConsumerMetrics
from consumer.record import SourceRecord
from consumer.retry import DEFAULT_RETRY, RetryPolicy

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
METADATA_PREFIX = "eventflow.dlq/v1:"
#: The dead-letter partition of a ledger loaded before the dead-letter topic existed. Committed
#: as such, it makes the next owner read the (then new) dead-letter partition from its beginning.
UNKNOWN_PARTITION = -1


def format_metadata(dlq_partition: int, dlq_offset: int) -> str:
    """Commit metadata naming the dead-letter partition and the offset to read it from."""
    return f"{METADATA_PREFIX}{dlq_partition}:{dlq_offset}"


def parse_metadata(metadata: str | None) -> tuple[int, int] | None:
    """``(dlq_partition, dlq_offset)`` from commit metadata, or None when it is not ours."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return None
    partition, _, offset = metadata[len(METADATA_PREFIX):].partition(":")
    try:
        return int(partition), int(offset)
    except ValueError:
        return None


@dataclass
class PartitionLedger:
    """What the dead-letter partition holds for one source partition from its committed position on.

    Attributes:
        dlq_partition: the dead-letter partition of this source partition.
        written: source offset -> dead-letter offset, for source offsets at or after the last commit.
        floor: an offset at or below which no future dead letter can be written (the end last seen).
    """

    dlq_partition: int
    written: dict[int, int] = field(default_factory=dict)
    floor: int = 0

    def commit_metadata(self, position: int) -> str:
        """Metadata for a commit at ``position``; forgets dead letters of offsets before it."""
        for offset in [o for o in self.written if o < position]:
            del self.written[offset]
        start = min([self.floor, *self.written.values()])
        return format_metadata(self.dlq_partition, start)


class DeadLetterLedger:
    """A `DeadLetterSink`, `CommitMetadata` and `PartitionListener` over one `DeadLetterPublisher`."""

    def __init__(self, publisher: DeadLetterPublisher, *, group_id: str, metrics: ConsumerMetrics,
                 retry: RetryPolicy = DEFAULT_RETRY, scan_idle_timeout_seconds: float = 10.0) -> None:
        self._publisher = publisher
        self._group_id = group_id
        self._metrics = metrics
        self._retry = retry
        self._idle_timeout = scan_idle_timeout_seconds
        self._ledgers: dict[TopicPartitionKey, PartitionLedger] = {}
        self._loading: dict[TopicPartitionKey, asyncio.Future[PartitionLedger]] = {}
        self._problem: str | None = None
        #: Running loads, held until done (the loop keeps only weak references to tasks).
        self._loads: set[asyncio.Task[None]] = set()

    def problem(self) -> str | None:
        """Why some partitions' ledgers cannot be loaded right now (their commits and dead letters wait)."""
        return self._problem

    def close(self) -> None:
        """Flushes the dead-letter producer."""
        self._publisher.close()

    # -- PartitionListener (called on the event loop) --------------------------------------------

    def assigned(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Starts reading the dead-letter tail of newly assigned partitions."""
        fresh = [p for p in partitions if p not in self._loading]
        if not fresh:
            return
        loop = asyncio.get_running_loop()
        for key in fresh:
            self._loading[key] = loop.create_future()
        task = loop.create_task(self._load(fresh), name="dead-letter-ledger-load")
        self._loads.add(task)
        task.add_done_callback(functools.partial(self._loaded, fresh))

    def _loaded(self, keys: list[TopicPartitionKey], task: asyncio.Task[None]) -> None:
        """A load ended: an unexpected failure reaches the waiters on its partitions (never dropped), and the
        partitions load again on their next record."""
        self._loads.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        log.error("dead_letter_ledger_load_failed", error_type=type(error).__name__)
        for key in keys:
            future = self._loading.get(key)
            if future is not None and not future.done():
                future.set_exception(error)
                # The next record of the partition starts a fresh load instead of meeting this failure.
                del self._loading[key]

    def revoked(self, partitions: Sequence[TopicPartitionKey]) -> None:
        for key in partitions:
            self._ledgers.pop(key, None)
            future = self._loading.pop(key, None)
            if future is not None and not future.done():
                future.cancel()

    # -- CommitMetadata (called on the loop, or on the poll thread during a revoke) ---------------

    def commit_metadata(self, partition: TopicPartitionKey, position: int) -> str | None:
        ledger = self._ledgers.get(partition)
        return ledger.commit_metadata(position) if ledger is not None else None

    # -- DeadLetterSink ------------------------------------------------------------------------

    async def dead_letter(self, record: SourceRecord, error_type: str, reason: str) -> DeadLetterReceipt:
        """Publishes ``record`` unless its source offset is already dead-lettered."""
        ledger = await self._ledger((record.topic, record.partition))
        existing = ledger.written.get(record.offset)
        if existing is not None:
            log.info("dead_letter_deduplicated", record=record.position, dead_letter=f"{ledger.dlq_partition}:{existing}")
            return DeadLetterReceipt(ledger.dlq_partition, existing, deduplicated=True)
        if ledger.dlq_partition == UNKNOWN_PARTITION:
            ledger.dlq_partition = await self._publisher.partition_for(record.topic, record.partition)
        offset = await self._publisher.publish(record, error_type, reason)
        ledger.written[record.offset] = offset
        ledger.floor = max(ledger.floor, offset + 1)
        return DeadLetterReceipt(ledger.dlq_partition, offset)

    async def _ledger(self, key: TopicPartitionKey) -> PartitionLedger:
        ledger = self._ledgers.get(key)
        if ledger is not None:
            return ledger
        if key not in self._loading:
            # A record of a partition we were never told about (a test driving the handler directly).
            self.assigned([key])
        return await asyncio.shield(self._loading[key])

    # -- loading -------------------------------------------------------------------------------

    async def _load(self, keys: list[TopicPartitionKey]) -> None:
        attempt = 0
        while True:
            wanted = [k for k in keys if k in self._loading and not self._loading[k].done()]
            if not wanted:
                return
            try:
                partitions = await self._publisher.existing_partitions()
                loaded = await self._scan(wanted, partitions)
                self._problem = None
                break
            except Exception as exc:  # noqa: BLE001 - the broker is unreachable: the partitions wait, visibly
                attempt += 1
                self._metrics.retries.labels("dead_letter_scan").inc()
                delay = self._retry.delay(attempt)
                self._problem = (f"cannot read the dead-letter tail of {len(wanted)} partitions "
                                 f"({attempt} attempts): {type(exc).__name__}: {str(exc)[:200]}")
                log.warning("dead_letter_scan_retrying", partitions=[f"{t}[{p}]" for t, p in wanted],
                            attempt=attempt, delay_seconds=round(delay, 3), error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
        for key, ledger in loaded.items():
            future = self._loading.get(key)
            if future is None or future.done():
                continue  # revoked while loading
            self._ledgers[key] = ledger
            future.set_result(ledger)
        log.info("dead_letter_ledger_loaded", partitions={f"{t}[{p}]": len(found.written) for (t, p), found in loaded.items()})

    async def _scan(self, keys: list[TopicPartitionKey],
                    dlq_partitions: int | None) -> dict[TopicPartitionKey, PartitionLedger]:
        """Reads committed positions, then the dead-letter tail of ``keys`` on the shared loop.

        With no dead-letter topic yet (``dlq_partitions`` None) nothing was dead-lettered: the
        ledgers are empty, with an unknown dead-letter partition until the first write.
        """
        positions, ledgers, starts = await asyncio.to_thread(self._plan, keys, dlq_partitions)
        dlq = self._publisher.topic
        for dlq_partition, start in starts.items():
            reader = _Provenance()
            loop: KafkaLoop[_Found | None] = KafkaLoop(
                FixedAssignment({(dlq, dlq_partition): start or 0}), reader,
                LoopOptions(name="dead-letter-ledger", stop_at_end=True, idle_timeout_seconds=self._idle_timeout),
                client_config=self._publisher.client_config)
            await loop.run(asyncio.Event())
            end = reader.end if reader.end is not None else loop.position((dlq, dlq_partition)) or 0
            for ledger in ledgers.values():
                if ledger.dlq_partition == dlq_partition:
                    ledger.floor = max(ledger.floor, end)
            for found in reader.found:
                ledger_of_source = ledgers.get(found.source)
                if ledger_of_source is not None and found.source_offset >= positions[found.source]:
                    ledger_of_source.written.setdefault(found.source_offset, found.dlq_offset)
        return ledgers

    def _plan(self, keys: list[TopicPartitionKey], dlq_partitions: int | None) -> tuple[
            dict[TopicPartitionKey, int], dict[TopicPartitionKey, PartitionLedger], dict[int, int | None]]:
        """Blocking: the committed positions of ``keys``, their ledgers, and where to read each dead-letter partition."""
        reader = Consumer({**self._publisher.client_config, "group.id": self._group_id,
                           "enable.auto.commit": False, "enable.auto.offset.store": False,
                           "auto.offset.reset": "earliest"})
        try:
            committed = reader.committed([TopicPartition(t, p) for t, p in keys], timeout=10)
        finally:
            reader.close()
        positions: dict[TopicPartitionKey, int] = {}
        ledgers: dict[TopicPartitionKey, PartitionLedger] = {}
        starts: dict[int, int | None] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            positions[key] = max(tp.offset, 0)
            if dlq_partitions is None:
                ledgers[key] = PartitionLedger(UNKNOWN_PARTITION)
                continue
            ledger = ledgers[key] = PartitionLedger(dead_letter_partition(tp.topic, tp.partition, dlq_partitions))
            stored = parse_metadata(tp.metadata)
            # No metadata of ours (never committed, or by an older version): read the whole partition.
            start = stored[1] if stored is not None and stored[0] == ledger.dlq_partition else None
            if ledger.dlq_partition in starts:
                previous = starts[ledger.dlq_partition]
                start = None if start is None or previous is None else min(start, previous)
            starts[ledger.dlq_partition] = start
        return positions, ledgers, starts


@dataclass(frozen=True)
class _Found:
    """A dead letter's provenance: the source record it holds, and where it is."""

    source: TopicPartitionKey
    source_offset: int
    dlq_offset: int


class _Provenance(Handoff[_Found | None]):
    """Collects the provenance of every dead letter read (records without it are skipped)."""

    def __init__(self) -> None:
        self.found: list[_Found] = []
        self.end: int | None = None

    def decode(self, record: SourceRecord) -> _Found | None:
        headers = parse_dead_letter_headers(list(record.headers))
        try:
            return _Found((headers["source_topic"], int(headers["source_partition"])),
                          int(headers["source_offset"]), record.offset)
        except (KeyError, ValueError):
            return None

    async def hand_off(self, records: Sequence[SourceRecord], items: Sequence[_Found | None]) -> None:
        self.found.extend(item for item in items if item is not None)

    def reached_end(self, partition: TopicPartitionKey, offset: int) -> None:
        self.end = offset
