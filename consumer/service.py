"""The Kafka-to-Temporal bridge: at-least-once, ordered per key, concurrent across keys.

Life of a record: poll, decode, route, start or signal journeys (retrying transient Temporal
errors), and only then mark its offset done. Offsets are committed per partition up to the
watermark (every earlier offset done). Memory stays bounded: when ``max_in_flight`` records are
in flight, or a Temporal call is being retried, every assigned partition is paused.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter
from temporalio.service import RPCError

from consumer.dead_letter import DeadLetterPublishError, DeadLetterPublisher
from consumer.dispatch import Dispatcher, Outcome, TransientTemporalError
from consumer.metrics import ConsumerMetrics
from consumer.watermark import PartitionWatermark
from events.codec import EventDecoder
from events.errors import DecodeError, RegistryUnavailableError
from events.model import CustomerEvent
from eventflow.settings import ConsumerSettings, KafkaSettings
from consumer.routes import EventRoutes, Route

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter for transient failures."""

    initial_seconds: float = 0.2
    maximum_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.maximum_seconds, self.initial_seconds * 2 ** (attempt - 1))


class ConsumerService:
    """One consumer-group member. Create, then ``await run(stop_event)``."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        settings: ConsumerSettings,
        decoder: EventDecoder,
        router: EventRoutes,
        dispatcher: Dispatcher,
        dead_letters: DeadLetterPublisher,
        metrics: ConsumerMetrics,
        retry: RetryPolicy = RetryPolicy(),
        commit_interval_seconds: float = 1.0,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._decoder = decoder
        self._router = router
        self._dispatcher = dispatcher
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._retry = retry
        self._commit_interval = commit_interval_seconds
        self._watermarks: dict[TopicPartitionKey, PartitionWatermark] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = {}
        self._key_tails: dict[bytes, asyncio.Task[None]] = {}
        self._unrouted_counters: dict[tuple[str, str], Counter] = {}
        self._in_flight = 0
        self._retrying = 0
        self._paused = False
        self._resume_at = max(1, settings.max_in_flight * 3 // 4)
        self._capacity = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self.ready = False

    # -- lifecycle -----------------------------------------------------------------------------

    def _create_consumer(self) -> Consumer:
        config = {
            **self._kafka.client_config(),
            "group.id": self._kafka.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "max.poll.interval.ms": 300000,
            "queued.max.messages.kbytes": 16384,
        }
        consumer = Consumer(config)
        consumer.subscribe(list(self._kafka.topics), on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_lost)
        return consumer

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop`` is set, then drains within the grace period and commits."""
        self._loop = asyncio.get_running_loop()
        self._consumer = self._create_consumer()
        log.info("consumer_started", topics=list(self._kafka.topics), group=self._kafka.consumer_group)
        last_commit = time.monotonic()
        last_lag = 0.0
        try:
            while not stop.is_set():
                self._apply_backpressure()
                if self._paused:
                    await self._wait_for_capacity(0.2)
                    # Still poll (non-blocking) while paused: rebalance callbacks and liveness need it.
                    messages = await asyncio.to_thread(self._fetch, 1, 0.0)
                else:
                    capacity = max(1, self._settings.max_in_flight - self._in_flight)
                    messages = await asyncio.to_thread(self._fetch, min(capacity, 1000), 0.1)
                self.ready = True
                for message in messages:
                    self._accept(message)
                now = time.monotonic()
                if now - last_commit >= self._commit_interval:
                    await self._commit()
                    last_commit = now
                if now - last_lag >= 5.0:
                    self._record_lag()
                    last_lag = now
                if not messages:
                    await asyncio.sleep(0)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        log.info("consumer_draining", in_flight=self._in_flight,
                 grace_seconds=self._settings.shutdown_grace_seconds)
        pending = [t for tasks in self._tasks.values() for t in tasks]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._settings.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self._commit()
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
        self._dead_letters.close()
        log.info("consumer_stopped")

    # -- rebalancing (called on the consume thread, inside consume()) -----------------------------

    def _on_assign(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._watermarks.setdefault((tp.topic, tp.partition), PartitionWatermark())
            self._tasks.setdefault((tp.topic, tp.partition), set())
        log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])
        if self._paused and self._consumer is not None:
            self._consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finishes (or, past the grace period, abandons) in-flight work, then commits what is safe."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if self._loop is not None and any(self._tasks.get(k) for k in keys):
            drain = asyncio.run_coroutine_threadsafe(self._drain(keys), self._loop)
            drain.result()
        offsets = self._commit_offsets(keys)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                self._metrics.commits.labels("ok").inc()
            except KafkaException as exc:
                self._metrics.commits.labels("failed").inc()
                log.warning("commit_on_revoke_failed", error=str(exc))
        for key in keys:
            self._forget(key)
        log.info("partitions_revoked", partitions=[f"{t}[{p}]" for t, p in keys])

    def _on_lost(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            for task in self._tasks.get(key, ()):
                task.cancel()
            self._forget(key)
        log.warning("partitions_lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _forget(self, key: TopicPartitionKey) -> None:
        try:
            self._metrics.lag.remove(key[0], str(key[1]))
        except KeyError:
            pass
        self._watermarks.pop(key, None)
        self._committed.pop(key, None)
        self._tasks.pop(key, None)

    async def _drain(self, keys: list[TopicPartitionKey]) -> None:
        tasks = [t for k in keys for t in self._tasks.get(k, ())]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            log.warning("in_flight_abandoned_on_revoke", count=len(late))

    # -- back-pressure and commits ----------------------------------------------------------------

    def _fetch(self, max_messages: int, timeout_seconds: float) -> list[Message]:
        """Whatever is buffered now, else waits for the first record; never waits to fill a batch."""
        assert self._consumer is not None
        batch = self._consumer.consume(max_messages, 0)
        if batch or timeout_seconds <= 0:
            return batch
        first = self._consumer.poll(timeout_seconds)
        if first is None:
            return []
        return [first, *self._consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]

    async def _wait_for_capacity(self, timeout_seconds: float) -> None:
        self._capacity.clear()
        if self._has_capacity():
            return
        try:
            await asyncio.wait_for(self._capacity.wait(), timeout_seconds)
        except TimeoutError:
            pass

    def _has_capacity(self) -> bool:
        return self._retrying == 0 and self._in_flight <= self._resume_at

    def _apply_backpressure(self) -> None:
        """Pauses every assigned partition at the in-flight bound or while retrying; resumes at 3/4 of it."""
        assert self._consumer is not None
        if self._paused:
            should_pause = not self._has_capacity()
        else:
            should_pause = self._in_flight >= self._settings.max_in_flight or self._retrying > 0
        if should_pause == self._paused:
            return
        assignment = self._consumer.assignment()
        if should_pause:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._paused = should_pause
        self._metrics.paused_partitions.set(len(assignment) if should_pause else 0)

    def _commit_offsets(self, keys: list[TopicPartitionKey] | None = None) -> list[TopicPartition]:
        offsets: list[TopicPartition] = []
        for key in keys if keys is not None else list(self._watermarks):
            watermark = self._watermarks.get(key)
            position = watermark.commit_position if watermark else None
            if position is not None and self._committed.get(key) != position:
                offsets.append(TopicPartition(key[0], key[1], position))
                self._committed[key] = position
        return offsets

    async def _commit(self) -> None:
        offsets = self._commit_offsets()
        if not offsets or self._consumer is None:
            return
        try:
            await asyncio.to_thread(self._consumer.commit, offsets=offsets, asynchronous=False)
            self._metrics.commits.labels("ok").inc()
        except KafkaException as exc:
            for tp in offsets:
                self._committed.pop((tp.topic, tp.partition), None)
            self._metrics.commits.labels("failed").inc()
            log.warning("commit_failed", error=str(exc))

    def _record_lag(self) -> None:
        assert self._consumer is not None
        for (topic, partition), watermark in list(self._watermarks.items()):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            position = watermark.commit_position
            if high >= 0 and position is not None:
                self._metrics.lag.labels(topic, str(partition)).set(max(0, high - position))

    # -- per-record processing --------------------------------------------------------------------

    def _accept(self, message: Message) -> None:
        """Takes one polled record: events nobody listens to are done at once, the rest become tasks."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume_error", error=error.str())
            return
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        key = (topic, partition)
        watermark = self._watermarks.get(key)
        if watermark is None:
            watermark = self._watermarks[key] = PartitionWatermark()
        decoded = self._try_decode(message.value() or b"", topic)
        if isinstance(decoded, str):
            # Nobody listens to this type: no side effects, so no order to keep and no Temporal call.
            watermark.skip(offset)
            self._count_unrouted(topic, decoded)
            return
        actions: list[Route] = []
        if isinstance(decoded, CustomerEvent):
            actions = self._router.route(decoded)
            if not actions:
                watermark.skip(offset)
                self._count_unrouted(topic, decoded.event_type)
                return
        watermark.add(offset)
        self._in_flight += 1
        self._metrics.in_flight.set(self._in_flight)
        ordering_key = message.key() or b""
        previous = self._key_tails.get(ordering_key)
        task = asyncio.get_running_loop().create_task(
            self._process(message, decoded, actions, previous, time.monotonic()))
        self._key_tails[ordering_key] = task
        self._tasks.setdefault(key, set()).add(task)

        def finished(done: asyncio.Task[None]) -> None:
            if self._key_tails.get(ordering_key) is done:
                del self._key_tails[ordering_key]
            tasks = self._tasks.get(key)
            if tasks is not None:
                tasks.discard(done)

        task.add_done_callback(finished)

    def _try_decode(self, raw: bytes, topic: str) -> CustomerEvent | str | DecodeError | RegistryUnavailableError:
        try:
            return self._decoder.decode_wanted(raw, topic, self._router.event_types)
        except (DecodeError, RegistryUnavailableError) as exc:
            return exc

    def _count_unrouted(self, topic: str, event_type: str) -> None:
        counter = self._unrouted_counters.get((topic, event_type))
        if counter is None:
            counter = self._metrics.events_consumed.labels(topic, event_type, "unrouted")
            self._unrouted_counters[(topic, event_type)] = counter
        counter.inc()

    async def _process(self, message: Message, decoded: CustomerEvent | DecodeError | RegistryUnavailableError,
                       actions: list[Route], previous: asyncio.Task[None] | None, polled_at: float) -> None:
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._handle(message, topic, decoded, actions)
        except asyncio.CancelledError:
            self._release()
            raise
        watermark = self._watermarks.get((topic, partition))
        if watermark is not None:
            watermark.done(offset)
        self._release()
        self._metrics.processing_seconds.observe(time.monotonic() - polled_at)

    def _release(self) -> None:
        self._in_flight -= 1
        self._metrics.in_flight.set(self._in_flight)
        if self._paused and self._has_capacity():
            self._capacity.set()

    async def _handle(self, message: Message, topic: str,
                      decoded: CustomerEvent | DecodeError | RegistryUnavailableError, actions: list[Route]) -> None:
        if isinstance(decoded, RegistryUnavailableError):
            raw = message.value() or b""
            try:
                decoded = await self._retrying_call("decode", functools.partial(self._decode, raw, topic))
            except DecodeError as exc:
                decoded = exc
            if isinstance(decoded, CustomerEvent):
                actions = self._router.route(decoded)
        if isinstance(decoded, DecodeError):
            await self._dead_letter(message, type(decoded).__name__, decoded.reason, topic, "unknown")
            return
        event = decoded
        if not actions:
            self._count_unrouted(topic, event.event_type)
            return
        bound = log.bind(event_id=event.event_id, event_type=event.event_type)
        outcomes: list[Outcome] = []
        for action in actions:
            try:
                result = await self._retrying_call("temporal", functools.partial(self._dispatcher.apply, event, action))
            except RPCError as exc:
                await self._dead_letter(message, "TemporalRejectedError", f"{exc.status.name}: {exc.message}",
                                        topic, event.event_type)
                return
            outcomes.append(result.outcome)
            self._count(result.outcome, action.journey_id)
            bound.info(f"journey_{result.outcome.value}", workflow_id=action.workflow_id)
        self._metrics.events_consumed.labels(topic, event.event_type, _summary(outcomes)).inc()

    async def _decode(self, raw: bytes, topic: str) -> CustomerEvent:
        return self._decoder(raw, topic)

    def _count(self, outcome: Outcome, journey_id: str) -> None:
        if outcome is Outcome.STARTED:
            self._metrics.workflow_starts.labels(journey_id).inc()
        elif outcome is Outcome.DEDUPED:
            self._metrics.workflow_dedupes.labels(journey_id).inc()
        elif outcome is Outcome.PREFERENCES_UPDATED:
            self._metrics.workflow_signals.labels(journey_id, "delivered").inc()
        else:
            self._metrics.workflow_signals.labels(journey_id, "delivered" if outcome is Outcome.SIGNALLED
                                                  else "no_instance").inc()

    async def _dead_letter(self, message: Message, error_type: str, reason: str, topic: str,
                           event_type: str) -> None:
        await self._retrying_call(
            "dead_letter", lambda: self._dead_letters.publish(message, error_type, reason))
        self._metrics.dead_letters.labels(topic, error_type).inc()
        self._metrics.events_consumed.labels(topic, event_type, "dead_lettered").inc()
        log.warning("event_dead_lettered", topic=topic, partition=message.partition(), offset=message.offset(),
                    error_type=error_type, reason=reason)

    async def _retrying_call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except (TransientTemporalError, RegistryUnavailableError, DeadLetterPublishError) as exc:
                attempt += 1
                self._metrics.retries.labels(operation).inc()
                delay = self._retry.delay(attempt)
                log.warning("transient_failure_retrying", operation=operation, attempt=attempt,
                            delay_seconds=round(delay, 3), error=str(exc))
                self._retrying += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._retrying -= 1
                    if self._paused and self._has_capacity():
                        self._capacity.set()


def _summary(outcomes: list[Outcome]) -> str:
    """One bounded outcome label per event, the most consequential of its actions."""
    for outcome, label in ((Outcome.STARTED, "started"), (Outcome.DEDUPED, "deduped"),
                           (Outcome.SIGNALLED, "signalled"), (Outcome.PREFERENCES_UPDATED, "signalled")):
        if outcome in outcomes:
            return label
    return "no_instance"
