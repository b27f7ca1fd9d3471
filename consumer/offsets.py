"""Which offsets are safe to commit, per partition, and which partitions have stopped moving.

Each assigned partition has a `PartitionWatermark`; `OffsetTracker.to_commit` yields the positions
that moved since the last commit, each with the commit metadata the dead-letter ledger wants
stored beside it. A partition whose position has not moved for a while although records are in
flight is reported by `stalled`, so a stuck partition is never silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import TopicPartition

from consumer.watermark import PartitionWatermark

TopicPartitionKey = tuple[str, int]


class CommitMetadata(Protocol):
    """Adds metadata to a partition's commit; None means "not yet": the partition is not committed."""

    def commit_metadata(self, partition: TopicPartitionKey, position: int) -> str | None: ...


class _NoMetadata:
    def commit_metadata(self, partition: TopicPartitionKey, position: int) -> str | None:
        return ""


@dataclass(frozen=True)
class StalledPartition:
    """A partition whose commit position has not moved for ``seconds`` with records in flight."""

    topic: str
    partition: int
    position: int | None
    in_flight: int
    seconds: float


@dataclass
class _Progress:
    position: int | None
    since: float


class OffsetTracker:
    """Watermarks and committed positions of the assigned partitions."""

    def __init__(self, metadata: CommitMetadata | None = None) -> None:
        self._metadata = metadata or _NoMetadata()
        self._watermarks: dict[TopicPartitionKey, PartitionWatermark] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._progress: dict[TopicPartitionKey, _Progress] = {}

    def assign(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for key in partitions:
            self._watermarks.setdefault(key, PartitionWatermark())

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for key in partitions:
            self._watermarks.pop(key, None)
            self._committed.pop(key, None)
            self._progress.pop(key, None)

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._watermarks)

    def _watermark(self, key: TopicPartitionKey) -> PartitionWatermark:
        watermark = self._watermarks.get(key)
        if watermark is None:
            watermark = self._watermarks[key] = PartitionWatermark()
        return watermark

    def add(self, key: TopicPartitionKey, offset: int) -> None:
        """A polled record whose work has started."""
        self._watermark(key).add(offset)

    def skip(self, key: TopicPartitionKey, offset: int) -> None:
        """A polled record that was done at once."""
        self._watermark(key).skip(offset)

    def done(self, key: TopicPartitionKey, offset: int) -> None:
        """A record's work is finished (handled or dead-lettered). Ignored after the partition was revoked."""
        watermark = self._watermarks.get(key)
        if watermark is not None:
            watermark.done(offset)

    def position(self, key: TopicPartitionKey) -> int | None:
        """The next offset to consume after a restart, or None."""
        watermark = self._watermarks.get(key)
        return watermark.commit_position if watermark is not None else None

    def to_commit(self, partitions: Iterable[TopicPartitionKey] | None = None) -> list[TopicPartition]:
        """Positions that moved since the last commit, with metadata; assumed committed (see `failed`)."""
        offsets: list[TopicPartition] = []
        for key in list(self._watermarks) if partitions is None else partitions:
            position = self.position(key)
            if position is None or self._committed.get(key) == position:
                continue
            metadata = self._metadata.commit_metadata(key, position)
            if metadata is None:
                continue
            # The client refuses metadata=None: a partition without metadata is committed without the argument.
            offsets.append(TopicPartition(key[0], key[1], position, metadata=metadata) if metadata
                           else TopicPartition(key[0], key[1], position))
            self._committed[key] = position
        return offsets

    def failed(self, offsets: Iterable[TopicPartition]) -> None:
        """A commit of ``offsets`` failed: they are offered again next time."""
        for tp in offsets:
            self._committed.pop((tp.topic, tp.partition), None)

    def stalled(self, now: float, after_seconds: float) -> list[StalledPartition]:
        """Partitions with records in flight whose position has not moved for ``after_seconds``."""
        stalled: list[StalledPartition] = []
        for key, watermark in self._watermarks.items():
            position = watermark.commit_position
            progress = self._progress.get(key)
            if progress is None or progress.position != position or not watermark.in_flight:
                self._progress[key] = _Progress(position, now)
                continue
            if now - progress.since >= after_seconds:
                stalled.append(StalledPartition(key[0], key[1], position, watermark.in_flight, now - progress.since))
        return stalled
