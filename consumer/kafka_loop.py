"""The one Kafka reading loop: poll a batch off the event loop, decode, hand off, commit in order.

Every reader of a topic runs on `KafkaLoop` and differs only in its `Handoff` (what a record
becomes and what is done with it) and its `Source`:

* `GroupSubscription`: a consumer-group member (the bridge, the feedback consumer). Offsets are
  committed per partition up to the watermark of records whose hand-off finished (`OffsetTracker`),
  on an interval, on revoke (after the handler finished or abandoned the partition's work) and at
  the end.
* `FixedAssignment`: partitions read from given offsets without a group or commits (the catalog
  follower, the dead-letter ledger, the DLQ tools); with ``stop_at_end`` the read ends once every
  partition reached the end it had when the read began (`read_to_end`).

The loop's guarantees, whatever the handler:

* a record's offset is committed only after `Handoff.hand_off` returned for it and, if it handed
  back a pending future, that future finished with True; records of a batch are registered in
  offset order only after the hand-off returned, so a hand-off that raises commits nothing of its
  batch;
* with ``overlap_fetch`` the fetch of batch N+1 runs (on a thread) while batch N is handed off.
  Rebalance callbacks run on that thread, so they are moved onto the event loop and wait for the
  hand-off under way; records fetched for a partition that was revoked before their hand-off are
  dropped (never registered, so never committed: the next owner reads them from the committed
  position);
* a fetch takes what librdkafka has buffered, up to ``max_batch`` records; what the handler has no
  room for is held by the loop and handed off as room frees, without another trip to a thread
  (the bridge at its in-flight bound frees a slot or two at a time). Held records of a partition
  that is revoked or lost are dropped, like a fetch's;
* back-pressure: while `Handoff.room` is 0 the loop fetches nothing; once it has been 0 for
  ``pause_after_seconds`` every assigned partition is paused (polling goes on, without records, so
  rebalances and liveness are served) until the handler has room again. A pause drops what
  librdkafka prefetched and the resume fetches it again, so a loop whose handler is at its bound
  many times a second (the bridge) waits a little before pausing;
* supervision: a loop that ends other than by ``stop`` logs ``kafka_loop_failed`` at once and
  `problem` says why (readiness), before the exception propagates;
* one thread calls the consumer: once the loop runs, every call on it (fetches, pause and resume,
  the watermarks behind `high_watermark`) is made on the fetch thread; commits wait on a worker
  thread, never on the event loop. confluent-kafka serialises the calls on one consumer, so a call
  made on the event loop while a fetch serves a rebalance callback (which waits for the event loop)
  never returned: the loop froze, stopped polling and was evicted from the group five minutes later
  (`max.poll.interval.ms`), the fault phase's stall.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.offsets import OffsetTracker
from consumer.record import SourceRecord
from core.errors import EventflowError

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
TopicPartitionKey = tuple[str, int]
#: Builds the Kafka consumer from its librdkafka configuration (``confluent_kafka.Consumer``).
ConsumerFactory = Callable[[dict[str, object]], Consumer]

#: How often a fetch refreshes the high watermarks `KafkaLoop.high_watermark` answers with.
WATERMARKS_EVERY_SECONDS = 1.0
#: Errors on a fixed assignment after which reading cannot go on (the topic is gone or forbidden).
_FATAL_FOR_ASSIGNMENT = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED})


class KafkaReadError(EventflowError):
    """A Kafka read cannot go on: a fatal client error, a missing topic, or a bounded read that stalled."""

    def __init__(self, loop: str, problem: str) -> None:
        super().__init__(f"{loop}: {problem}")
        self.loop = loop
        self.problem = problem


@dataclass(frozen=True)
class GroupSubscription:
    """Read ``topics`` as a member of ``group_id``, committing what was handed off.

    ``config`` adds or overrides librdkafka settings (the assignment strategy, commit metadata
    needs, fetch sizes); the loop's own (manual commits and offset storing) cannot be overridden.
    """

    topics: tuple[str, ...]
    group_id: str
    config: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FixedAssignment:
    """Read the given partitions from the given offsets, in no group and committing nothing."""

    starts: Mapping[TopicPartitionKey, int]
    config: Mapping[str, object] = field(default_factory=dict)


Source = GroupSubscription | FixedAssignment


@dataclass(frozen=True)
class LoopOptions:
    """How one loop polls.

    Attributes:
        name: the loop's name in logs and readiness.
        max_batch: most records fetched at once.
        poll_timeout_seconds: how long a fetch waits for its first record.
        commit_interval_seconds: how often a group member commits (0: after every batch).
        overlap_fetch: fetch the next batch while this one is handed off.
        stop_at_end: end once every partition reached the end it had when the read began.
        idle_timeout_seconds: a bounded read that gets nothing for this long fails (`KafkaReadError`).
        tick_seconds: how often ``on_tick`` runs.
        pause_after_seconds: how long the handler may have no room before the partitions are paused.
    """

    name: str
    max_batch: int = 500
    poll_timeout_seconds: float = 0.5
    commit_interval_seconds: float = 1.0
    overlap_fetch: bool = False
    stop_at_end: bool = False
    idle_timeout_seconds: float = 10.0
    tick_seconds: float = 5.0
    pause_after_seconds: float = 0.0


class Handoff(ABC, Generic[T]):
    """What a loop hands records to: one subclass per reader, typed by what a record decodes into.

    Only `decode` and `hand_off` are required; the partition hooks and `room` have defaults for a
    handler that finishes each batch before returning.
    """

    @abstractmethod
    def decode(self, record: SourceRecord) -> T:
        """Turns a record into the handler's type, on the event loop; must not raise for content."""

    @abstractmethod
    async def hand_off(self, records: Sequence[SourceRecord],
                       items: Sequence[T]) -> Sequence[asyncio.Future[bool] | None] | None:
        """Takes a batch (records in poll order, each with what it decoded into); per record None (finished)
        or a pending future.

        Returning None means every record of the batch is finished.
        """

    def room(self) -> int:
        """How many more records may be handed off now; 0 fetches nothing (and in time pauses the partitions)."""
        return 1 << 30

    async def wait_for_room(self, timeout_seconds: float) -> None:
        """Returns when there may be room again (or after the timeout)."""
        await asyncio.sleep(timeout_seconds)

    async def assigned(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Partitions were assigned (before any of their records is handed off)."""

    async def revoking(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Partitions are being revoked: finish (or abandon) their pending work; the loop commits after."""

    def revoked(self, partitions: Sequence[TopicPartitionKey], *, lost: bool) -> None:
        """Partitions are gone; ``lost``: taken without a revoke (cancel their work, nothing is committed)."""

    def reached_end(self, partition: TopicPartitionKey, offset: int) -> None:
        """The partition has no record at or after ``offset`` right now (only on fixed assignments)."""


class KafkaLoop(Generic[T]):
    """Runs one `Handoff` over one `Source` until ``stop`` (or, with ``stop_at_end``, the end)."""

    def __init__(self, source: Source, handoff: Handoff[T], options: LoopOptions, *,
                 client_config: Mapping[str, object], offsets: OffsetTracker | None = None,
                 consumer_factory: ConsumerFactory = Consumer,
                 on_tick: Callable[[KafkaLoop[T]], None] | None = None,
                 on_commit: Callable[[bool], None] | None = None,
                 on_pause: Callable[[int], None] | None = None) -> None:
        """``offsets``: the commit bookkeeping of a group member (its metadata source); a fresh one by default.
        ``on_commit`` is told the result of every commit (True: ok); ``on_pause`` how many partitions
        back-pressure paused (0: resumed)."""
        self.source = source
        self.options = options
        self._handoff = handoff
        self._client_config = dict(client_config)
        self.offsets = offsets or OffsetTracker()
        self._factory = consumer_factory
        self._on_tick = on_tick
        self._on_commit = on_commit
        self._on_pause = on_pause
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartitionKey] = set()
        self._positions: dict[TopicPartitionKey, int] = {}
        self._ends: dict[TopicPartitionKey, int] = {}
        self._paused = False
        #: Whether the consumer's partitions are paused now (set on the fetch thread, which pauses them).
        self._pause_applied = False
        #: The partitions' high watermarks as the fetch thread last read them (librdkafka's cached values).
        self._high_watermarks: dict[TopicPartitionKey, int] = {}
        self._watermarks_read_at = 0.0
        self._full_since: float | None = None
        self._problem: str | None = None
        self._generations: dict[TopicPartitionKey, int] = {}
        self._loop_thread: int | None = None
        #: Messages fetched and not yet handed off, in fetch order: a fetch takes what librdkafka has
        #: (up to ``max_batch``), the hand-offs take what the handler has room for.
        self._held: list[Message] = []
        #: True once a fetch returned: the loop polls (readiness).
        self.polling = False
        #: Fetches issued so far (`fetch_issued` waits for one), and fetches whose records came back.
        self.fetches = 0
        self.fetched = 0
        self._fetch_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- what others read ----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def problem(self) -> str | None:
        """Why the loop stopped before it was asked to, or None."""
        return self._problem

    def assignment(self) -> list[TopicPartitionKey]:
        return sorted(self._assigned)

    def position(self, partition: TopicPartitionKey) -> int | None:
        """The offset after the last record handed off (or the end reached) of ``partition``."""
        return self._positions.get(partition)

    def high_watermark(self, partition: TopicPartitionKey) -> int | None:
        """The partition's end as a fetch last read it (at most `WATERMARKS_EVERY_SECONDS` old), or None.

        Read by the fetch thread, never here: a call on the consumer from the event loop can wait
        forever for a fetch that waits for the event loop (see the module's docstring).
        """
        return self._high_watermarks.get(partition)

    def consumer_config(self) -> dict[str, object]:
        """The librdkafka configuration of this loop's consumer."""
        base: dict[str, object] = {
            **self._client_config,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # librdkafka's own lines go through logging (JSON, level-filtered), never raw to stderr.
            "logger": logging.getLogger("librdkafka"),
        }
        match self.source:
            case GroupSubscription(group_id=group, config=extra):
                return {**base, **extra, "group.id": group, "enable.auto.commit": False,
                        "enable.auto.offset.store": False}
            case FixedAssignment(config=extra):
                # The client wants a group id, but an assigning reader never joins nor commits.
                return {**base, "enable.partition.eof": True, **extra,
                        "group.id": f"eventflow-reader-{time.time_ns()}", "enable.auto.commit": False}

    async def fetch_issued(self, count: int) -> None:
        """Returns once ``count`` fetches were issued (a test forces an overlap with it)."""
        if self.fetches >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._fetch_waiters.append((count, waiter))
        await waiter

    # -- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Reads until ``stop`` (or the end); drains, commits and closes the consumer in ``finally``."""
        try:
            await self._run(stop)
        except BaseException as exc:
            if not stop.is_set() and not isinstance(exc, asyncio.CancelledError):
                self._problem = f"{self.options.name} stopped: {type(exc).__name__}: {str(exc)[:200]}"
                log.error("kafka_loop_failed", loop=self.options.name, error=repr(exc)[:300])
            raise

    async def _run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        consumer = self._consumer = await asyncio.to_thread(self._factory, self.consumer_config())
        fetch: asyncio.Task[list[Message]] | None = None
        try:
            await self._start(consumer)
            last_commit = last_tick = last_record = time.monotonic()
            while not stop.is_set():
                if self._ended():
                    return
                room = self._apply_backpressure(time.monotonic())
                if fetch is None:
                    if room == 0:
                        await self._handoff.wait_for_room(0.2)
                        if self._paused:
                            # Still poll (non-blocking) while paused: rebalance callbacks and liveness need it.
                            fetch = self._fetch(consumer, 1, 0.0)
                    elif not self._held:
                        fetch = self._fetch(consumer, self.options.max_batch, self.options.poll_timeout_seconds)
                elif room == 0 and self._held and not fetch.done():
                    await self._handoff.wait_for_room(0.2)
                fetched = False
                if fetch is not None and (not self._held or fetch.done()):
                    self._held.extend(await fetch)
                    fetch = None
                    fetched = True
                    self.fetched += 1
                self.polling = True
                records = self._take(room)
                if self.options.overlap_fetch and records and fetch is None and not self._held \
                        and not stop.is_set() and not self._paused:
                    # Issued before the hand-off below, so the broker round trip and the handling overlap.
                    fetch = self._fetch(consumer, self.options.max_batch, self.options.poll_timeout_seconds)
                now = time.monotonic()
                if records:
                    await self._hand_off(records)
                    last_record = now
                elif self.options.stop_at_end and now - last_record > self.options.idle_timeout_seconds:
                    waiting = {f"{t}[{p}]": f"{self._positions.get((t, p))}/{end}"
                               for (t, p), end in self._ends.items() if self._positions.get((t, p), -1) < end}
                    raise KafkaReadError(self.options.name, f"no record for {self.options.idle_timeout_seconds:g}s "
                                                            f"before the end (position/end: {waiting})")
                if isinstance(self.source, GroupSubscription) and (
                        now - last_commit >= self.options.commit_interval_seconds):
                    await self.commit()
                    last_commit = now
                if self._on_tick is not None and now - last_tick >= self.options.tick_seconds:
                    self._on_tick(self)
                    last_tick = now
                if not fetched:
                    await asyncio.sleep(0)
        finally:
            if fetch is not None:
                # Its records were never handed off: dropped, so never committed.
                await asyncio.gather(fetch, return_exceptions=True)
            self._held.clear()
            await self._finish(consumer)

    async def _start(self, consumer: Consumer) -> None:
        match self.source:
            case GroupSubscription(topics=topics):
                consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                   on_lost=self._on_lost)
            case FixedAssignment(starts=starts):
                keys = list(starts)
                self.offsets.assign(keys)
                self._assigned.update(keys)
                if self.options.stop_at_end:
                    self._ends = await asyncio.to_thread(self._read_ends, consumer, keys)
                    for key in keys:
                        if starts[key] >= self._ends[key]:
                            self._positions[key] = starts[key]
                await self._handoff.assigned(keys)
                consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])

    def _read_ends(self, consumer: Consumer, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        try:
            return {key: int(consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)[1]) for key in keys}
        except KafkaException as exc:
            raise KafkaReadError(self.options.name, f"cannot read where the partitions end: {exc}") from exc

    def _ended(self) -> bool:
        return self.options.stop_at_end and all(self._positions.get(k, -1) >= end for k, end in self._ends.items())

    async def _finish(self, consumer: Consumer) -> None:
        if isinstance(self.source, GroupSubscription):
            async with self._lock:
                await self._handoff.revoking(self.assignment())
                await _settle()
            await self.commit()
        # Closing a group member revokes its partitions: the callbacks find nothing left to finish.
        await asyncio.to_thread(consumer.close)
        if isinstance(self.source, FixedAssignment):
            self._handoff.revoked(self.assignment(), lost=False)
        self._consumer = None

    # -- fetching (on a thread) -------------------------------------------------------------------

    def _fetch(self, consumer: Consumer, max_messages: int, timeout_seconds: float) -> asyncio.Task[list[Message]]:
        task = asyncio.create_task(asyncio.to_thread(self._poll, consumer, min(max_messages, self.options.max_batch),
                                                     timeout_seconds, self._paused), name=f"{self.options.name}-fetch")
        self.fetches += 1
        if self._fetch_waiters:
            for count, waiter in self._fetch_waiters:
                if count <= self.fetches and not waiter.done():
                    waiter.set_result(None)
            self._fetch_waiters = [(c, w) for c, w in self._fetch_waiters if not w.done()]
        return task

    def _poll(self, consumer: Consumer, max_messages: int, timeout_seconds: float, paused: bool) -> list[Message]:
        """Whatever is buffered now, else waits for the first record; never waits to fill a batch.

        On the fetch thread: first pauses or resumes the assignment as back-pressure asked (``paused``),
        and after the fetch refreshes the high watermarks, so the event loop never calls the consumer.
        """
        if paused != self._pause_applied:
            assignment = consumer.assignment()
            if paused:
                consumer.pause(assignment)
            else:
                consumer.resume(assignment)
            self._pause_applied = paused
        batch = consumer.consume(max_messages, 0)
        if not batch and timeout_seconds > 0:
            first = consumer.poll(timeout_seconds)
            if first is not None:
                batch = [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
        self._read_watermarks(consumer)
        return batch

    def _read_watermarks(self, consumer: Consumer) -> None:
        """Refreshes `high_watermark`'s answers from librdkafka's cache (no broker round trip), on the fetch thread."""
        now = time.monotonic()
        if now - self._watermarks_read_at < WATERMARKS_EVERY_SECONDS:
            return
        self._watermarks_read_at = now
        highs: dict[TopicPartitionKey, int] = {}
        try:
            for tp in consumer.assignment():
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    highs[(tp.topic, tp.partition)] = int(high)
        except KafkaException:
            return  # the next fetch tries again; lag is reported from the last reading meanwhile
        self._high_watermarks = highs  # replaced whole: the event loop reads it without a lock

    def _take(self, room: int) -> list[SourceRecord]:
        """Up to ``room`` records off the held messages, in fetch order; end-of-partition markers and
        errors met on the way take effect as they are reached, so none overtakes a record before it."""
        held = self._held
        records: list[SourceRecord] = []
        taken = 0
        try:
            while taken < len(held) and len(records) < room:
                message = held[taken]
                taken += 1
                error = message.error()
                if error is None:
                    records.append(SourceRecord.from_message(message))
                    continue
                if error.code() == KafkaError._PARTITION_EOF:
                    key = (str(message.topic()), int(message.partition() or 0))
                    end = int(message.offset() or 0)
                    self._positions[key] = max(self._positions.get(key, end), end)
                    self._handoff.reached_end(key, end)
                elif error.fatal() or (isinstance(self.source, FixedAssignment)
                                       and error.code() in _FATAL_FOR_ASSIGNMENT):
                    raise KafkaReadError(self.options.name, error.str())
                else:
                    log.warning("consume_error", loop=self.options.name, error=error.str())
        finally:
            del held[:taken]
        return records

    def _drop_held(self, keys: Sequence[TopicPartitionKey]) -> None:
        """Forgets held messages of partitions that left: their next owner reads them again."""
        gone = set(keys)
        if self._held:
            self._held = [m for m in self._held if (m.topic(), m.partition()) not in gone]

    # -- handing off (on the event loop) --------------------------------------------------------

    async def _hand_off(self, records: list[SourceRecord]) -> None:
        async with self._lock:
            # A partition revoked since the fetch: its records belong to the next owner now.
            kept = [r for r in records if (r.topic, r.partition) in self._assigned]
            if len(kept) < len(records):
                log.info("records_dropped_after_revoke", loop=self.options.name, count=len(records) - len(kept))
            if not kept:
                return
            decode = self._handoff.decode
            items = [decode(record) for record in kept]
            pending = await self._handoff.hand_off(kept, items)
            self._register(kept, pending)

    def _register(self, records: list[SourceRecord], pending: Sequence[asyncio.Future[bool] | None] | None) -> None:
        """Marks the batch in offset order: finished records at once, pending ones when their future does."""
        offsets = self.offsets
        positions = self._positions
        if pending is None:
            for record in records:
                key = (record.topic, record.partition)
                offsets.skip(key, record.offset)
                positions[key] = record.offset + 1
            return
        if len(pending) != len(records):
            raise ValueError(f"{self.options.name}: hand_off returned {len(pending)} results for {len(records)} records")
        for record, future in zip(records, pending, strict=True):
            key = (record.topic, record.partition)
            positions[key] = record.offset + 1
            if future is None:
                offsets.skip(key, record.offset)
                continue
            offsets.add(key, record.offset)
            generation = self._generations.get(key, 0)
            future.add_done_callback(functools.partial(self._settled, key=key, offset=record.offset,
                                                       generation=generation))

    def _settled(self, future: asyncio.Future[bool], *, key: TopicPartitionKey, offset: int, generation: int) -> None:
        if future.cancelled() or future.exception() is not None or future.result() is not True:
            return  # never done: the partition stops committing here (and reports a stall)
        # Work finishing while its partition is revoked still counts (the revoke commits it), but work of
        # an earlier assignment must not mark a refetched record done.
        if self._generations.get(key, 0) == generation:
            self.offsets.done(key, offset)

    # -- back-pressure and commits --------------------------------------------------------------

    def _apply_backpressure(self, now: float) -> int:
        """Pauses every assigned partition once the handler has had no room for ``pause_after_seconds``;
        resumes when it has room. The next fetch pauses or resumes them, on the fetch thread (`_poll`)."""
        room = max(0, self._handoff.room())
        if room > 0:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        paused = self._full_since is not None and now - self._full_since >= self.options.pause_after_seconds
        if paused != self._paused:
            self._paused = paused
            if self._on_pause is not None:
                self._on_pause(len(self._assigned) if paused else 0)
        return room

    async def commit(self) -> bool:
        """Commits what is safe now (a group member); False if the broker refused."""
        consumer = self._consumer
        offsets = self.offsets.to_commit()
        if consumer is None or not offsets:
            return True
        try:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.offsets.failed(offsets)
            self._committed(False)
            log.warning("commit_failed", loop=self.options.name, error=str(exc))
            return False
        self._committed(True)
        return True

    def _committed(self, ok: bool) -> None:
        if self._on_commit is not None:
            self._on_commit(ok)

    # -- rebalancing: called on the fetch thread, moved onto the event loop -----------------------

    def _on_loop(self, work: Callable[[], Coroutine[object, object, R]]) -> R:
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("a Kafka call that can rebalance ran on the event loop thread")
        return asyncio.run_coroutine_threadsafe(work(), loop).result()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._on_loop(lambda: self._assign(keys))
        log.info("partitions_assigned", loop=self.options.name, partitions=_names(keys))
        if self._pause_applied:  # this callback runs inside a fetch, on the fetch thread
            consumer.pause(partitions)

    async def _assign(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self._generations[key] = self._generations.get(key, 0) + 1
        self.offsets.assign(keys)
        self._assigned.update(keys)
        await self._handoff.assigned(keys)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finishes (or abandons) the partitions' work, commits what is safe, then forgets them."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        offsets = self._on_loop(lambda: self._revoking(keys))
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self._committed(True)
            except KafkaException as exc:
                self._committed(False)
                log.warning("commit_on_revoke_failed", loop=self.options.name, error=str(exc))
        self._on_loop(lambda: self._forget(keys, lost=False))
        log.info("partitions_revoked", loop=self.options.name, partitions=_names(keys))

    async def _revoking(self, keys: list[TopicPartitionKey]) -> list[TopicPartition]:
        async with self._lock:  # the hand-off under way ends first; later batches drop these partitions
            self._assigned.difference_update(keys)
            self._drop_held(keys)
            await self._handoff.revoking(keys)
            await _settle()
            return self.offsets.to_commit(keys)

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._on_loop(lambda: self._forget(keys, lost=True))
        log.warning("partitions_lost", loop=self.options.name, partitions=_names(keys))

    async def _forget(self, keys: list[TopicPartitionKey], *, lost: bool) -> None:
        async with self._lock:
            self._assigned.difference_update(keys)
            self._drop_held(keys)
            for key in keys:
                self._positions.pop(key, None)
            self.offsets.forget(keys)
            self._handoff.revoked(keys, lost=lost)


async def _settle() -> None:
    """Lets the done-callbacks of work that just finished mark their offsets (they run on the next turn)."""
    await asyncio.sleep(0)


def _names(keys: Sequence[TopicPartitionKey]) -> list[str]:
    return [f"{t}[{p}]" for t, p in keys]


class _Collect(Handoff[R]):
    """Keeps what ``decode`` makes of every record (a bounded read's handler)."""

    def __init__(self, decode: Callable[[SourceRecord], R]) -> None:
        self._decode = decode
        self.items: list[R] = []

    def decode(self, record: SourceRecord) -> R:
        return self._decode(record)

    async def hand_off(self, records: Sequence[SourceRecord], items: Sequence[R]) -> None:
        self.items.extend(items)


async def read_to_end(client_config: Mapping[str, object], starts: Mapping[TopicPartitionKey, int],
                      decode: Callable[[SourceRecord], R], *, name: str,
                      idle_timeout_seconds: float = 10.0) -> list[R]:
    """Every record from ``starts`` to the partitions' ends as of now, decoded, in order per partition.

    Raises:
        KafkaReadError: nothing arrived for ``idle_timeout_seconds`` before the end, or the topic is gone.
    """
    collect = _Collect(decode)
    loop = KafkaLoop(FixedAssignment(starts), collect,
                     LoopOptions(name=name, stop_at_end=True, idle_timeout_seconds=idle_timeout_seconds),
                     client_config=client_config)
    await loop.run(asyncio.Event())
    return collect.items


def run_blocking(work: Callable[[], Awaitable[R]]) -> R:
    """Runs an async read from blocking code (commands), even when the caller's thread has a running loop."""
    outcome: list[R] = []
    failure: list[BaseException] = []

    def target() -> None:
        async def main() -> None:
            outcome.append(await work())

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name="kafka-read")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


__all__ = ["ConsumerFactory", "FixedAssignment", "GroupSubscription", "Handoff", "KafkaLoop", "KafkaReadError",
           "LoopOptions", "Source", "read_to_end", "run_blocking"]
