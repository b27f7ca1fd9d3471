"""The Kafka-to-Temporal bridge: at-least-once, ordered per key, concurrent across keys.

Life of a record: the shared `KafkaLoop` polls it (the next batch is fetched while this one is
handed off); `RecordHandler.prepare` decodes and routes it (events nobody listens to are done at
once); the rest run in key order in the `KeyScheduler`, and only when `RecordHandler.handle` has
handled or dead-lettered a record is its offset done in the `OffsetTracker`, which commits per
partition up to the watermark. `ConsumerService` adds the process around the loop: background
tasks, readiness, lag and stall reports, and the resources it closes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import structlog
from confluent_kafka import Consumer

from consumer.handler import Job, RecordHandler, unexpected_failure
from consumer.kafka_loop import ConsumerFactory, GroupSubscription, Handoff, KafkaLoop, LoopOptions
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
#: How long the bridge may sit at its in-flight bound before it pauses its partitions (see `LoopOptions`).
BOUND_PAUSE_AFTER_SECONDS = 1.0
#: librdkafka settings of the bridge beyond the loop's own: cooperative rebalancing, so a member
#: joining or leaving moves only the partitions it must; a fetch queue bounded to 16 MiB.
BRIDGE_CONSUMER_CONFIG: dict[str, object] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "max.poll.interval.ms": 300000,
    "queued.max.messages.kbytes": 16384,
}


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


class BridgeHandoff(Handoff[Job | Unrouted]):
    """The bridge's records on the shared loop: unrouted ones finish at once, the rest run in key order."""

    def __init__(self, *, handler: RecordHandler, scheduler: KeyScheduler, retrier: Retrier,
                 metrics: ConsumerMetrics, listeners: Sequence[PartitionListener], grace_seconds: float) -> None:
        self._handler = handler
        self._scheduler = scheduler
        self._retrier = retrier
        self._metrics = metrics
        self._listeners = tuple(listeners)
        self._grace = grace_seconds

    def decode(self, record: SourceRecord) -> Job | Unrouted:
        try:
            return self._handler.prepare(record)
        except Exception as exc:  # noqa: BLE001 - prepare promises not to raise; if it does, the record is still dead-lettered
            self._metrics.unexpected_failures.labels("prepare").inc()
            return Job(record, failure=unexpected_failure("prepare", exc))

    async def hand_off(self, records: Sequence[SourceRecord],
                       items: Sequence[Job | Unrouted]) -> list[asyncio.Future[bool] | None]:
        pending: list[asyncio.Future[bool] | None] = []
        unrouted: Counter[tuple[str, str]] = Counter()
        submit, now = self._scheduler.submit, time.monotonic()
        for record, prepared in zip(records, items, strict=True):
            if isinstance(prepared, Unrouted):
                # Nobody listens: no side effects, so no order to keep and no Temporal call. Counted
                # once per event type and batch: a counter's lock per record was a tenth of the loop.
                unrouted[(record.topic, prepared.event_type)] += 1
                pending.append(None)
                continue
            pending.append(submit(record.key or b"", (record.topic, record.partition),
                                  functools.partial(self._finish, prepared, now)))
        for (topic, event_type), records_of_type in unrouted.items():
            self._handler.count_unrouted(topic, event_type, records_of_type)
        return pending

    def room(self) -> int:
        """The scheduler's free slots; none at the in-flight bound or while a transient failure is retried."""
        # Asked before every fetch, so the gauge follows the work as it finishes.
        self._metrics.in_flight.set(self._scheduler.in_flight)
        if self._scheduler.should_pause(self._retrier.retrying):
            return 0
        return max(1, self._scheduler.free)

    async def wait_for_room(self, timeout_seconds: float) -> None:
        await self._scheduler.wait_for_capacity(timeout_seconds)

    async def assigned(self, partitions: Sequence[TopicPartitionKey]) -> None:
        for listener in self._listeners:
            listener.assigned(partitions)

    async def revoking(self, partitions: Sequence[TopicPartitionKey]) -> None:
        """Finishes (or, past the grace period, abandons) the partitions' work; the loop commits after."""
        if abandoned := await self._scheduler.drain(partitions, self._grace):
            log.warning("in_flight_abandoned_on_revoke", count=abandoned)

    def revoked(self, partitions: Sequence[TopicPartitionKey], *, lost: bool) -> None:
        if lost:
            self._scheduler.cancel(partitions)
        for topic, partition in partitions:
            try:
                self._metrics.lag.remove(topic, str(partition))
            except KeyError:
                pass
        for listener in self._listeners:
            listener.revoked(partitions)

    async def _finish(self, job: Job, polled_at: float) -> bool:
        """Handles one record; True once it is handled or dead-lettered (its offset may be committed)."""
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
                return False
        self._handler.count(record.topic, result)
        self._metrics.processing_seconds.observe(time.monotonic() - polled_at,
                                                 exemplar=tracing.exemplar_from(record.headers))
        return True


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
        self._scheduler = scheduler
        self._offsets = offsets
        self._retrier = retrier
        self._metrics = metrics
        self._resources = tuple(resources)
        self._health: tuple[HealthSource, ...] = (*health, *background)
        self._stall_after = stall_after_seconds
        self._background = tuple(background)
        self.handoff = BridgeHandoff(handler=handler, scheduler=scheduler, retrier=retrier, metrics=metrics,
                                     listeners=listeners, grace_seconds=settings.shutdown_grace_seconds)
        self.loop: KafkaLoop[Job | Unrouted] = KafkaLoop(
            GroupSubscription(tuple(kafka.topics), kafka.consumer_group, BRIDGE_CONSUMER_CONFIG), self.handoff,
            LoopOptions(name="bridge", max_batch=1000, poll_timeout_seconds=0.1,
                        commit_interval_seconds=commit_interval_seconds, overlap_fetch=True,
                        pause_after_seconds=BOUND_PAUSE_AFTER_SECONDS),
            client_config=kafka.client_config(), offsets=offsets, consumer_factory=consumer_factory,
            on_tick=lambda _: self._tick(), on_commit=self._count_commit,
            on_pause=self._metrics.paused_partitions.set)

    @property
    def metrics(self) -> ConsumerMetrics:
        return self._metrics

    @property
    def ready(self) -> bool:
        """True once the loop has polled."""
        return self.loop.polling

    # -- lifecycle -----------------------------------------------------------------------------

    def consumer_config(self) -> dict[str, object]:
        """The librdkafka configuration: manual offset storing and commits, cooperative rebalancing."""
        return self.loop.consumer_config()

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop`` is set, then drains within the grace period and commits."""
        log.info("consumer_started", topics=list(self._kafka.topics), group=self._kafka.consumer_group)
        background_stop = asyncio.Event()
        # A loop that promised not to raise and did is logged at once, not only at shutdown.
        background = [supervised(task.run(background_stop), name=task.name) for task in self._background]
        try:
            await self.loop.run(stop)
        finally:
            log.info("consumer_draining", in_flight=self._scheduler.in_flight,
                     grace_seconds=self._settings.shutdown_grace_seconds)
            for resource in self._resources:
                await asyncio.to_thread(resource.close)
            log.info("consumer_stopped")
            await _stop_background(background, background_stop)

    def readiness(self) -> tuple[bool, str]:
        """Whether the consumer works, and if not why.

        Not ready before the first poll, while a transient failure is retried, while a part reports a
        problem (the dead-letter ledger cannot load, the journey catalog cannot be read), or with a stalled
        partition.
        """
        if problem := self.loop.problem():
            return False, problem
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

    # -- every few seconds, on the loop ------------------------------------------------------------

    def _count_commit(self, ok: bool) -> None:
        self._metrics.commits.labels("ok" if ok else "failed").inc()

    def _tick(self) -> None:
        self._record_lag()
        self._check_stalls(time.monotonic())

    def _record_lag(self) -> None:
        for topic, partition in self._offsets.partitions():
            high = self.loop.high_watermark((topic, partition))
            position = self._offsets.position((topic, partition))
            if high is not None and position is not None:
                self._metrics.lag.labels(topic, str(partition)).set(max(0, high - position))

    def _check_stalls(self, now: float) -> None:
        stalled = self._offsets.stalled(now, self._stall_after)
        self._metrics.stalled_partitions.set(len(stalled))
        for entry in stalled:
            reason = self._retrier.reason_for(entry.topic, entry.partition) or (
                f"the record at offset {entry.position} has not finished")
            log.warning("partition_stalled", topic=entry.topic, partition=entry.partition, position=entry.position,
                        in_flight=entry.in_flight, stalled_seconds=round(entry.seconds), reason=reason)
