"""The shared Kafka loop on the real broker: the next fetch overlaps the hand-off, and a rebalance loses nothing."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumer.kafka_loop import GroupSubscription, Handoff, KafkaLoop, LoopOptions
from consumer.record import SourceRecord
from consumer.topics import ensure_topics
from tests.harness import eventually

Key = tuple[str, int]
PER_PARTITION = 30
#: On revoke the first member finishes this many of a partition's pending records and abandons the rest.
FINISHED_ON_REVOKE = 5


class _Watched(Consumer):
    """A real consumer that shows every commit to a check before making it."""

    def __init__(self, config: dict[str, object], check: Callable[[list[TopicPartition]], None]) -> None:
        super().__init__(config)
        self._check = check

    def commit(self, *, offsets: list[TopicPartition],  # type: ignore[override]  # the loop's one way to commit
               asynchronous: bool) -> object:
        self._check(offsets)
        return super().commit(offsets=offsets, asynchronous=False)


class _Member(Handoff[SourceRecord]):
    """Hands records back as pending work; what is finished, and what each commit covered, is recorded."""

    def __init__(self, *, finish_at_once: bool) -> None:
        self.finish_at_once = finish_at_once
        self.loop: KafkaLoop[SourceRecord] | None = None
        self.first_batch = asyncio.Event()
        self.overlapped: bool | None = None
        self.handed: dict[Key, list[int]] = {}
        self.finished: dict[Key, set[int]] = {}
        self.pending: dict[Key, list[tuple[int, asyncio.Future[bool]]]] = {}
        self.violations: list[str] = []
        #: Set when the test stops the member: then every pending record is finished.
        self.stopping = False

    def decode(self, record: SourceRecord) -> SourceRecord:
        return record

    async def hand_off(self, records: Sequence[SourceRecord],
                       items: Sequence[SourceRecord]) -> list[asyncio.Future[bool] | None]:
        assert self.loop is not None
        if self.overlapped is None:
            # Held until the fetch after this batch's is issued: only an overlapping loop gets past.
            try:
                await asyncio.wait_for(self.loop.fetch_issued(self.loop.fetched + 1), 10)
                self.overlapped = True
            except TimeoutError:
                self.overlapped = False
            self.first_batch.set()
        results: list[asyncio.Future[bool] | None] = []
        for record in records:
            key = (record.topic, record.partition)
            self.handed.setdefault(key, []).append(record.offset)
            if self.finish_at_once:
                self.finished.setdefault(key, set()).add(record.offset)
                results.append(None)
                continue
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self.pending.setdefault(key, []).append((record.offset, future))
            results.append(future)
        return results

    async def revoking(self, partitions: Sequence[Key]) -> None:
        for key in partitions:
            for index, (offset, future) in enumerate(self.pending.pop(key, [])):
                if index < FINISHED_ON_REVOKE or self.stopping:
                    self.finished.setdefault(key, set()).add(offset)
                    future.set_result(True)
                else:
                    future.cancel()  # abandoned: must never be committed

    def check_commit(self, offsets: list[TopicPartition]) -> None:
        """On the committing thread: every offset below a committed position was finished here."""
        for tp in offsets:
            key = (tp.topic, tp.partition)
            handed = self.handed.get(key, [])
            start = min(handed) if handed else tp.offset
            missing = set(range(start, tp.offset)) - self.finished.get(key, set())
            if missing:
                self.violations.append(f"{key}@{tp.offset} commits unfinished {sorted(missing)[:5]}")


def _loop(kafka_config: dict[str, str], topic: str, group: str, member: _Member, name: str) -> KafkaLoop[SourceRecord]:
    loop = KafkaLoop(GroupSubscription((topic,), group, {"partition.assignment.strategy": "cooperative-sticky"}),
                     member, LoopOptions(name=name, max_batch=7, poll_timeout_seconds=0.1, commit_interval_seconds=0.0,
                                         overlap_fetch=True),
                     client_config=kafka_config,
                     consumer_factory=lambda config: _Watched(config, member.check_commit))
    member.loop = loop
    return loop


async def test_the_next_fetch_overlaps_the_hand_off_and_a_rebalance_commits_only_finished_work(
        kafka_config: dict[str, str], unique: str) -> None:
    topic, group = f"test-loop-{unique}", f"test-loop-{unique}"
    await asyncio.to_thread(ensure_topics, kafka_config, [topic], partitions=2)
    producer = Producer(kafka_config)
    for partition in (0, 1):
        for index in range(PER_PARTITION):
            producer.produce(topic, value=f"{partition}-{index}".encode(), partition=partition)
    assert producer.flush(10) == 0

    first, second = _Member(finish_at_once=False), _Member(finish_at_once=True)
    first_stop, second_stop = asyncio.Event(), asyncio.Event()
    first_run = asyncio.create_task(_loop(kafka_config, topic, group, first, "first").run(first_stop))
    second_run: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(first.first_batch.wait(), 30)
        assert first.overlapped, "the hand-off of a batch ran before the next fetch was issued"
        # Every record is handed off and pending when the second member joins and takes a partition.
        await eventually(lambda: sum(len(v) for v in first.handed.values()) == 2 * PER_PARTITION,
                         message="the first member holding every record")
        second_loop = _loop(kafka_config, topic, group, second, "second")
        second_run = asyncio.create_task(second_loop.run(second_stop))
        await eventually(lambda: second_loop.assignment(), message="the second member assigned a partition")
        [moved] = second_loop.assignment()
        # It resumes exactly after what the first member finished on revoke: the abandoned records again.
        await eventually(lambda: max(second.handed.get(moved, [-1])) == PER_PARTITION - 1,
                         message="the second member reading the moved partition to its end")
        assert min(second.handed[moved]) == FINISHED_ON_REVOKE
    finally:
        first.stopping = True
        first_stop.set()
        await asyncio.wait_for(first_run, 30)
        second_stop.set()
        if second_run is not None:
            await asyncio.wait_for(second_run, 30)

    everything = set(range(PER_PARTITION))
    for partition in (0, 1):
        key = (topic, partition)
        done_by_first, done_by_second = first.finished.get(key, set()), second.finished.get(key, set())
        assert done_by_first | done_by_second == everything, f"records of {key} lost"
        assert not done_by_first & done_by_second, f"records of {key} finished twice"
    assert first.violations == [] and second.violations == []
    reader = Consumer({**kafka_config, "group.id": group})
    try:
        committed = await asyncio.to_thread(reader.committed, [TopicPartition(topic, p) for p in (0, 1)], 10)
    finally:
        reader.close()
    assert [tp.offset for tp in committed] == [PER_PARTITION, PER_PARTITION]


class _Bounded(Handoff[SourceRecord]):
    """Holds at most ``bound`` records pending; counts the loop's waits for room and any batch past the room."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.overruns = 0
        self.pending: list[asyncio.Future[bool]] = []
        self.handed = 0
        self.waits = 0
        self.paused_seen = False
        self.loop: KafkaLoop[SourceRecord] | None = None
        #: The loop's count of fetches issued, at each hand-off.
        self.fetches_at_hand_off: list[int] = []

    def decode(self, record: SourceRecord) -> SourceRecord:
        return record

    async def hand_off(self, records: Sequence[SourceRecord],
                       items: Sequence[SourceRecord]) -> list[asyncio.Future[bool] | None]:
        if len(records) > self.room():
            self.overruns += 1
        assert self.loop is not None
        self.fetches_at_hand_off.append(self.loop.fetches)
        futures = [asyncio.get_running_loop().create_future() for _ in records]
        self.pending.extend(futures)
        self.handed += len(records)
        return list(futures)

    def room(self) -> int:
        return self.bound - sum(not f.done() for f in self.pending)

    async def wait_for_room(self, timeout_seconds: float) -> None:
        self.waits += 1
        assert self.loop is not None
        self.paused_seen = self.paused_seen or self.loop.paused
        await asyncio.sleep(0.01)

    def finish_all(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(True)


def _waited(handler: _Bounded, waits: int) -> bool:
    return handler.waits >= waits


class _ThreadRecordingConsumer(Consumer):
    """A real consumer that notes which thread made each call that waits for the handle."""

    calls: list[tuple[str, int]]

    def __init__(self, config: dict[str, object]) -> None:
        super().__init__(config)
        self.calls = []

    def _note(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self._note("consume")
        return super().consume(num_messages, timeout)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._note("pause")
        super().pause(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._note("resume")
        super().resume(partitions)

    def assignment(self) -> list[TopicPartition]:
        self._note("assignment")
        return super().assignment()

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        self._note("get_watermark_offsets")
        return super().get_watermark_offsets(partition, cached=cached) if timeout is None else \
            super().get_watermark_offsets(partition, timeout, cached)


async def _run_bounded(kafka_config: dict[str, str], unique: str, pause_after_seconds: float, *,
                       consumers: list[_ThreadRecordingConsumer] | None = None,
                       ticks: list[int | None] | None = None) -> _Bounded:
    """Reads 20 records with room for 5, finishing them only after the loop waited for room 5 times.

    With ``consumers``, the loop's consumer is a `_ThreadRecordingConsumer` appended there; with ``ticks``,
    every turn of the loop asks for partition 0's high watermark (as the service's lag gauge does) into it.
    """
    topic = f"test-bound-{unique}"
    await asyncio.to_thread(ensure_topics, kafka_config, [topic], partitions=1)
    producer = Producer(kafka_config)
    for index in range(20):
        producer.produce(topic, value=str(index).encode())
    assert producer.flush(10) == 0
    handler = _Bounded(bound=5)

    def recording(config: dict[str, object]) -> Consumer:
        consumer = _ThreadRecordingConsumer(config)
        assert consumers is not None
        consumers.append(consumer)
        return consumer

    def tick(loop: KafkaLoop[SourceRecord]) -> None:
        assert ticks is not None
        ticks.append(loop.high_watermark((topic, 0)))

    loop = KafkaLoop(GroupSubscription((topic,), topic, {}), handler,
                     LoopOptions(name="bounded", max_batch=20, poll_timeout_seconds=0.1,
                                 pause_after_seconds=pause_after_seconds, tick_seconds=0.0),
                     client_config=kafka_config, consumer_factory=recording if consumers is not None else Consumer,
                     on_tick=tick if ticks is not None else None)
    handler.loop = loop
    stop = asyncio.Event()
    run = asyncio.create_task(loop.run(stop))
    try:
        while handler.handed < 20:
            await eventually(lambda: handler.room() == 0, message="the handler at its bound")
            await eventually(functools.partial(_waited, handler, handler.waits + 5), message="the loop waiting for room")
            handler.finish_all()
    finally:
        handler.finish_all()
        stop.set()
        await asyncio.wait_for(run, 30)
    return handler


async def test_a_loop_at_its_bound_fetches_nothing_and_pauses_only_after_the_grace(
        kafka_config: dict[str, str], unique: str) -> None:
    # A pause drops what librdkafka prefetched: the bridge waits at its bound without pausing first.
    patient = await _run_bounded(kafka_config, f"{unique}-a", pause_after_seconds=3600)
    assert (patient.handed, patient.overruns, patient.paused_seen) == (20, 0, False)
    # What one fetch brought beyond the room is held and handed off as room frees, not fetched again.
    hand_offs = patient.fetches_at_hand_off
    assert len(hand_offs) >= 4 and hand_offs[-1] - hand_offs[0] < len(hand_offs) - 1, hand_offs
    at_once = await _run_bounded(kafka_config, f"{unique}-b", pause_after_seconds=0)
    assert (at_once.handed, at_once.overruns, at_once.paused_seen) == (20, 0, True)


async def test_the_event_loop_never_calls_the_consumer_while_the_loop_runs(
        kafka_config: dict[str, str], unique: str) -> None:
    # confluent-kafka serialises the calls on one consumer. The lag gauge read the watermarks on the event
    # loop while a fetch served a rebalance callback that waited for the event loop: both waited forever.
    consumers: list[_ThreadRecordingConsumer] = []
    ticks: list[int | None] = []
    event_loop_thread = threading.get_ident()
    handler = await _run_bounded(kafka_config, unique, pause_after_seconds=0, consumers=consumers, ticks=ticks)
    assert handler.handed == 20 and handler.paused_seen
    [consumer] = consumers
    names = {name for name, _ in consumer.calls}
    assert {"consume", "pause", "get_watermark_offsets"} <= names, names
    assert [name for name, thread in consumer.calls if thread == event_loop_thread] == []
    # The lag gauge still has the partition's end, as the fetch thread last read it.
    assert 20 in ticks
