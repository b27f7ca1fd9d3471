"""Per-partition commit watermarks: an offset is committable once it and all before it are done."""

from __future__ import annotations

import heapq


class PartitionWatermark:
    """Tracks offsets of one partition in flight and the highest safe commit position.

    Offsets are added in increasing order as they are polled and may finish in any order.
    ``commit_position`` is the offset to commit: one past the longest done prefix.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._done: set[int] = set()
        self._position: int | None = None

    def add(self, offset: int) -> None:
        heapq.heappush(self._pending, offset)
        if self._position is None:
            self._position = offset

    def skip(self, offset: int) -> None:
        """Records an offset that is done as soon as it is polled (nothing to do for it)."""
        if self._pending:
            self.add(offset)
            self.done(offset)
        else:
            self._position = offset + 1

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            finished = heapq.heappop(self._pending)
            self._done.discard(finished)
            self._position = finished + 1

    @property
    def commit_position(self) -> int | None:
        """Next offset to consume after a restart, or None if nothing was polled yet."""
        if self._pending:
            return self._pending[0]
        return self._position

    @property
    def in_flight(self) -> int:
        return len(self._pending)
