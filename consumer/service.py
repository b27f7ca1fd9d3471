"""The poll loop of the Kafka-to-Temporal bridge: at-least-once, ordered per key, concurrent across keys.

Life of a record: poll; `RecordHandler.prepare` decodes and routes it (events nobody listens to
are done at once); the rest run in key order in the `KeyScheduler`, and only when
`RecordHandler.handle` has handled or dead-lettered a record is its offset done in the
`OffsetTracker`, which commits per partition up to the watermark. The loop owns only the Kafka
consumer (built by an injected factory), rebalancing and the clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.handler import Job, RecordHandler, unexpected_failure
from consumer.metrics import ConsumerMetrics
from consumer.offsets import OffsetTracker
from consumer.record import SourceRecord, Unrouted
from consumer.retry import Retrier
from consumer.scheduler import KeyScheduler
from core import tracing
from core.settings import ConsumerSettings, KafkaSettings
from core.tasks import stop_all, supervised

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
#: Builds the Kafka consumer from its librdkafka configuration (``confluent_kafka.Consumer``).
ConsumerFactory = Callable[[dict[str, object]], Consumer]


class PartitionListener(Protocol):
    """Told about assignment changes, on the event loop, before records of new partitions are handled."""

    def assigned(self, partitions: Sequence[TopicPartitionKey]) -> None: ...

    def revoked(self, partitions: Sequence[TopicPartitionKey]) -> None: ...


class HealthSource(Protocol):
    """A part that can say why it cannot work right now (shown by readiness)."""

    def problem(self) -> str | None: ...


class BackgroundTask(Protocol):
    """A loop the service runs beside polling (the journey catalog follower); ends when ``stop`` is set.

    `problem` makes the service not ready; `note` is shown while it is ready (what an operator
    should see without the pod leaving service, such as catalog records that were skipped).
    """

    @property
    def name(self) -> str: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    def problem(self) -> str | None: ...

    def note(self) -> str | None: ...


class Closeable(Protocol):
    """Something the service closes when it stops (the dead-letter producer)."""

    def close(self) -> None: ...


async def _stop_background(tasks: list[asyncio.Task[None]], stop: asyncio.Event, wait_seconds: float = 5.0) -> None:
    """Stops the background loops after the drain (routing is needed until then), within a bounded wait;
    each is awaited (its failure was logged when it happened)."""
    stop.set()
    await stop_all(tasks, wait_seconds)


def _names(keys: Sequence[TopicPartitionKey]) -> list[str]:
    return [f"{t}[{p}]" for t, p in keys]


class ConsumerService:
    """One consumer-group member. Build with `consumer.wiring.build_consumer_service`; ``await run(stop)``."""

    def __init__(self, *, kafka: KafkaSettings, settings: ConsumerSettings, handler: RecordHandler,
                 scheduler: KeyScheduler, offsets: OffsetTracker, retrier: Retrier, metrics: ConsumerMetrics,
                 consumer_factory: ConsumerFactory = Consumer, listeners: Sequence[PartitionListener] = (),
                 resources: Sequence[Closeable] = (), health: Sequence[HealthSource] = (),
                 commit_interval_seconds: float = 1.0,
                 stall_after_seconds: float = 60.0, background: Sequence[BackgroundTask] = ()) -> None:
        self._kafka = kafka
        self._settings = settings
        self._handler = handler
        self._scheduler = scheduler
        self._offsets = offsets
        self._retrier = retrier
        self._metrics = metrics
        self._factory = consumer_factory
        self._listeners = tuple(listeners)
        self._resources = tuple(resources)
        self._health: tuple[HealthSource, ...] = (*health, *background)
        self._commit_interval = commit_interval_seconds
        self._stall_after = stall_after_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self.ready = False
        self._background = tuple(background)

    @property
    def metrics(self) -> ConsumerMetrics:
        return self._metrics

    # -- lifecycle -----------------------------------------------------------------------------

    def consumer_config(self) -> dict[str, object]:
        """The librdkafka configuration: manual offset storing and commits, cooperative rebalancing."""
        return {
            **self._kafka.client_config(),
            "group.id": self._kafka.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "max.poll.interval.ms": 300000,
            "queued.max.messages.kbytes": 16384,
            # librdkafka's own lines go through logging (JSON, level-filtered), never raw to stderr.
            "logger": logging.getLogger("librdkafka"),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop`` is set, then drains within the grace period and commits."""
        self._loop = asyncio.get_running_loop()
        consumer = self._consumer = self._factory(self.consumer_config())
        consumer.subscribe(list(self._kafka.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("consumer_started", topics=list(self._kafka.topics), group=self._kafka.consumer_group)
        last_commit = last_check = time.monotonic()
        background_stop = asyncio.Event()
        # A loop that promised not to raise and did is logged at once, not only at shutdown.
        background = [supervised(task.run(background_stop), name=task.name) for task in self._background]
        try:
            while not stop.is_set():
                if self._apply_backpressure(consumer):
                    await self._scheduler.wait_for_capacity(0.2)
                    # Still poll (non-blocking) while paused: rebalance callbacks and liveness need it.
                    messages = await asyncio.to_thread(self._fetch, consumer, 1, 0.0)
                else:
                    batch = min(max(1, self._scheduler.free), 1000)
                    messages = await asyncio.to_thread(self._fetch, consumer, batch, 0.1)
                self.ready = True
                for message in messages:
                    self._accept(message)
                self._metrics.in_flight.set(self._scheduler.in_flight)
                now = time.monotonic()
                if now - last_commit >= self._commit_interval:
                    await self._commit(consumer)
                    last_commit = now
                if now - last_check >= 5.0:
                    self._record_lag(consumer)
                    self._check_stalls(now)
                    last_check = now
                if not messages:
                    await asyncio.sleep(0)
        finally:
            await self._shutdown(consumer)
            await _stop_background(background, background_stop)

    def readiness(self) -> tuple[bool, str]:
        """Whether the consumer works, and if not why.

        Not ready before the first poll, while a transient failure is retried, while a part reports a
        problem (the dead-letter ledger cannot load, the journey catalog cannot be read), or with a stalled
        partition.
        """
        if not self.ready:
            return False, "not yet polling"
        states = self._retrier.states()
        if states:
            return False, states[0].describe(time.monotonic()) + (
                f" (+{len(states) - 1} more)" if len(states) > 1 else "")
        problems = [p for p in (source.problem() for source in self._health) if p]
        if problems:
            return False, "; ".join(problems)
        stalled = self._offsets.stalled(time.monotonic(), self._stall_after)
        if stalled:
            return False, "stalled: " + "; ".join(
                f"{s.topic}[{s.partition}]@{s.position} for {s.seconds:.0f}s" for s in stalled)
        notes = [n for n in (task.note() for task in self._background) if n]
        return True, "; ".join(["polling", *notes])

    async def _shutdown(self, consumer: Consumer) -> None:
        log.info("consumer_draining", in_flight=self._scheduler.in_flight,
                 grace_seconds=self._settings.shutdown_grace_seconds)
        abandoned = await self._scheduler.drain(None, self._settings.shutdown_grace_seconds)
        if abandoned:
            log.warning("in_flight_abandoned_on_shutdown", count=abandoned)
        await self._commit(consumer)
        await asyncio.to_thread(consumer.close)
        for resource in self._resources:
            await asyncio.to_thread(resource.close)
        log.info("consumer_stopped")

    # -- rebalancing (called on the consume thread, inside consume()) -----------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._offsets.assign(keys)
        self._tell_listeners("assigned", keys)
        log.info("partitions_assigned", partitions=_names(keys))
        if self._scheduler.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finishes (or, past the grace period, abandons) in-flight work, then commits what is safe."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if self._loop is not None and self._scheduler.tasks(keys):
            drain = asyncio.run_coroutine_threadsafe(
                self._scheduler.drain(keys, self._settings.shutdown_grace_seconds), self._loop)
            if abandoned := drain.result():
                log.warning("in_flight_abandoned_on_revoke", count=abandoned)
        offsets = self._offsets.to_commit(keys)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self._metrics.commits.labels("ok").inc()
            except KafkaException as exc:
                self._metrics.commits.labels("failed").inc()
                log.warning("commit_on_revoke_failed", error=str(exc))
        self._forget(keys)
        log.info("partitions_revoked", partitions=_names(keys))

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._scheduler.cancel(keys)
        self._forget(keys)
        log.warning("partitions_lost", partitions=_names(keys))

    def _forget(self, keys: list[TopicPartitionKey]) -> None:
        for topic, partition in keys:
            try:
                self._metrics.lag.remove(topic, str(partition))
            except KeyError:
                pass
        self._offsets.forget(keys)
        self._tell_listeners("revoked", keys)

    def _tell_listeners(self, change: str, keys: list[TopicPartitionKey]) -> None:
        assert self._loop is not None
        for listener in self._listeners:
            self._loop.call_soon_threadsafe(getattr(listener, change), keys)

    # -- polling, back-pressure and commits -------------------------------------------------------

    @staticmethod
    def _fetch(consumer: Consumer, max_messages: int, timeout_seconds: float) -> list[Message]:
        """Whatever is buffered now, else waits for the first record; never waits to fill a batch."""
        batch = consumer.consume(max_messages, 0)
        if batch or timeout_seconds <= 0:
            return batch
        first = consumer.poll(timeout_seconds)
        if first is None:
            return []
        return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]

    def _apply_backpressure(self, consumer: Consumer) -> bool:
        """Pauses every assigned partition at the in-flight bound or while retrying; resumes at 3/4 of it."""
        was_paused = self._scheduler.paused
        paused = self._scheduler.should_pause(self._retrier.retrying)
        if paused != was_paused:
            assignment = consumer.assignment()
            if paused:
                consumer.pause(assignment)
            else:
                consumer.resume(assignment)
            self._metrics.paused_partitions.set(len(assignment) if paused else 0)
        return paused

    async def _commit(self, consumer: Consumer) -> None:
        offsets = self._offsets.to_commit()
        if not offsets:
            return
        try:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
            self._metrics.commits.labels("ok").inc()
        except KafkaException as exc:
            self._offsets.failed(offsets)
            self._metrics.commits.labels("failed").inc()
            log.warning("commit_failed", error=str(exc))

    def _record_lag(self, consumer: Consumer) -> None:
        for topic, partition in self._offsets.partitions():
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            position = self._offsets.position((topic, partition))
            if high >= 0 and position is not None:
                self._metrics.lag.labels(topic, str(partition)).set(max(0, high - position))

    def _check_stalls(self, now: float) -> None:
        stalled = self._offsets.stalled(now, self._stall_after)
        self._metrics.stalled_partitions.set(len(stalled))
        for entry in stalled:
            reason = self._retrier.reason_for(entry.topic, entry.partition) or (
                f"the record at offset {entry.position} has not finished")
            log.warning("partition_stalled", topic=entry.topic, partition=entry.partition, position=entry.position,
                        in_flight=entry.in_flight, stalled_seconds=round(entry.seconds), reason=reason)

    # -- per record -------------------------------------------------------------------------------

    def _accept(self, message: Message) -> None:
        """Takes one polled record: events nobody listens to are done at once, the rest become tasks."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume_error", error=error.str())
            return
        record = SourceRecord.from_message(message)
        partition = (record.topic, record.partition)
        try:
            prepared = self._handler.prepare(record)
        except Exception as exc:  # noqa: BLE001 - prepare promises not to raise; if it does, the record is still dead-lettered
            self._metrics.unexpected_failures.labels("prepare").inc()
            prepared = Job(record, failure=unexpected_failure("prepare", exc))
        if isinstance(prepared, Unrouted):
            # Nobody listens: no side effects, so no order to keep and no Temporal call.
            self._offsets.skip(partition, record.offset)
            self._handler.count(record.topic, prepared)
            return
        self._offsets.add(partition, record.offset)
        self._scheduler.submit(record.key or b"", partition, functools.partial(self._finish, prepared,
                                                                                time.monotonic()))

    async def _finish(self, job: Job, polled_at: float) -> None:
        record = job.record
        try:
            result = await self._handler.handle(job)
        except Exception as exc:  # handle promises not to raise: a bug; dead-letter the record once more
            self._metrics.unexpected_failures.labels("handler").inc()
            log.exception("record_handling_failed", record=record.position, error_type=type(exc).__name__)
            try:
                result = await self._handler.handle(Job(record, failure=unexpected_failure("handler", exc)))
            except Exception:
                # Nothing more can be done for this record: its partition stops committing here, and
                # the stall check names it every few seconds until an operator acts.
                log.exception("record_stuck", record=record.position)
                return
        self._offsets.done((record.topic, record.partition), record.offset)
        self._handler.count(record.topic, result)
        self._metrics.processing_seconds.observe(time.monotonic() - polled_at,
                                                 exemplar=tracing.exemplar_from(record.headers))

