"""Building blocks shared by integration tests: an in-process worker + consumer, and Kafka readers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from prometheus_client import CollectorRegistry
from temporalio.client import Client

from activities.channels import Channel
from activities.contact import ContactDirectory
from activities.ledger import DeliveryLedger
from activities.outbox import OutboxChannel, read_outbox
from activities.push import DeviceDirectory
from consumer.dispatch import Dispatcher
from consumer.handler import EventRouter
from consumer.metrics import ConsumerMetrics
from consumer.retry import RetryPolicy
from consumer.routes import EventRoutes
from consumer.service import BackgroundTask, ConsumerService
from consumer.wiring import build_consumer_service
from core.settings import ConsumerSettings, KafkaSettings
from events.codec import EventDecoder
from events.producer import EventProducer
from events.schemas import load as load_schemas
from events.sources import RecordDecoder
from journeys.loader import load_all
from journeys.model import JourneyDefinition
from workflows.worker import JourneyWorkers, build_worker


@dataclass
class Bridge:
    """A running worker and consumer for one test."""

    topic: str
    task_queue: str
    outbox: Path
    producer: EventProducer
    metrics: ConsumerMetrics
    service: ConsumerService
    worker: JourneyWorkers | None
    _stop: asyncio.Event
    _service_stop: asyncio.Event
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def sent(self) -> list[dict[str, Any]]:
        return read_outbox(self.outbox)

    async def publish(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.producer.send(event)
        await self.producer.flush_async()

    async def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        self.producer.send_raw(value, key)
        await self.producer.flush_async()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def service_stop(self) -> None:
        """Stops only the consumer (graceful: drains, commits, leaves the group); the worker keeps running."""
        self._service_stop.set()
        await asyncio.gather(self._tasks[-1], return_exceptions=True)


async def start_bridge(*, kafka_config: dict[str, str], client: Client, topic: str, outbox: Path, suffix: str,
                       definitions: Sequence[JourneyDefinition] | None = None, max_in_flight: int = 256,
                       with_worker: bool = True, decoder: RecordDecoder | None = None,
                       router: EventRouter | None = None, stall_after_seconds: float = 60.0,
                       extra_topics: tuple[str, ...] = (), dispatcher: Dispatcher | None = None,
                       background: Sequence[BackgroundTask] = (), ledger: DeliveryLedger | None = None,
                       contacts: ContactDirectory | None = None, channels: Mapping[str, Channel] | None = None,
                       devices: DeviceDirectory | None = None) -> Bridge:
    task_queue = f"test-journeys-{suffix}"
    kafka = KafkaSettings(bootstrap_servers=kafka_config["bootstrap.servers"], topics=(topic, *extra_topics),
                          consumer_group=f"test-group-{suffix}", dlq_topic=f"{topic}.dlq", librdkafka={})
    metrics = ConsumerMetrics(CollectorRegistry())
    service = build_consumer_service(
        kafka=kafka,
        settings=ConsumerSettings(max_in_flight=max_in_flight, shutdown_grace_seconds=10),
        decoder=decoder or EventDecoder(load_schemas()),
        router=router or EventRoutes(definitions if definitions is not None else load_all()),
        dispatcher=dispatcher or Dispatcher(client, task_queue),
        metrics=metrics,
        stall_after_seconds=stall_after_seconds,
        retry=RetryPolicy(initial_seconds=0.1, maximum_seconds=2.0),
        commit_interval_seconds=0.2,
        background=background,
    )
    channel = OutboxChannel(outbox)
    worker = (build_worker(client, task_queue, {"email": channel, "sms": channel, "whatsapp": channel,
                                                **(channels or {})},
                           ledger=ledger, contacts=contacts, devices=devices)
              if with_worker else None)
    stop, service_stop = asyncio.Event(), asyncio.Event()
    bridge = Bridge(topic, task_queue, outbox, EventProducer(kafka_config, topic, load_schemas()), metrics,
                    service, worker, stop, service_stop)
    if worker is not None:
        bridge._tasks.append(asyncio.create_task(_run_worker(worker, stop)))
    bridge._tasks.append(asyncio.create_task(_until_either(service, stop, service_stop)))
    return bridge


async def _until_either(service: ConsumerService, stop: asyncio.Event, service_stop: asyncio.Event) -> None:
    either = asyncio.Event()

    async def relay(event: asyncio.Event) -> None:
        await event.wait()
        either.set()

    relays = [asyncio.create_task(relay(stop)), asyncio.create_task(relay(service_stop))]
    try:
        await service.run(either)
    finally:
        for task in relays:
            task.cancel()


async def _run_worker(worker: JourneyWorkers, stop: asyncio.Event) -> None:
    async with worker:
        await stop.wait()


async def eventually(check: Callable[[], Any], *, timeout_seconds: float = 30.0, interval_seconds: float = 0.2,
                     message: str = "condition") -> Any:
    """Polls ``check`` until it returns a truthy value; fails the test after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds}s waiting for {message}")
        await asyncio.sleep(interval_seconds)


def read_topic(kafka_config: dict[str, str], topic: str, *, expected: int, timeout_seconds: float = 20.0) -> list[Message]:
    """Reads ``expected`` records from the start of ``topic``.

    Its partitions are assigned, not subscribed to: a group join waits for the broker's rebalance delay,
    and on a loaded machine that wait took the whole timeout once (every record had been acknowledged).
    """
    consumer = Consumer({**kafka_config, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    deadline = time.monotonic() + timeout_seconds
    partitions = consumer.list_topics(topic, timeout=timeout_seconds).topics[topic].partitions
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
    records: list[Message] = []
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(expected - len(records), 0.5):
                if message.error() is None:
                    records.append(message)
    finally:
        consumer.close()
    return records


def committed_behind(kafka_config: dict[str, str], group: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic``, how far ``group``'s committed offset is behind the end (empty: caught up)."""
    from confluent_kafka import TopicPartition

    reader = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        behind = {}
        for tp in committed:
            _, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if high > max(tp.offset, 0):
                behind[tp.partition] = high - max(tp.offset, 0)
        return behind
    finally:
        reader.close()


def consumer_env(kafka_config: dict[str, str], temporal_address: str, topic: str, suffix: str) -> dict[str, str]:
    """Environment for an ``eventflow consume`` subprocess on this test's topic, group and task queue."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
        "TEMPORAL_ADDRESS": temporal_address,
        "EVENTFLOW_TOPICS": topic,
        "EVENTFLOW_CONSUMER_GROUP": f"test-group-{suffix}",
        "EVENTFLOW_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTFLOW_TASK_QUEUE": f"test-journeys-{suffix}",
        "EVENTFLOW_METRICS_PORT": "0",
        "EVENTFLOW_LOG_FORMAT": "json",
        # A killed member's partitions move after the session timeout; keep it short in tests.
        "EVENTFLOW_LIBRDKAFKA_SESSION_TIMEOUT_MS": "6000",
    })
    return env


def spawn_consumer(env: dict[str, str], log_path: Path) -> Any:
    """Starts ``eventflow consume`` as a separate process, output to ``log_path``."""
    import subprocess
    import sys

    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "eventflow.cli", "consume"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)


async def workflow_runs(client: Client, task_queue: str) -> dict[str, int]:
    """Number of runs per journey workflow ID on ``task_queue`` (from Temporal's visibility store)."""
    runs: dict[str, int] = {}
    async for execution in client.list_workflows(f"TaskQueue = '{task_queue}' AND WorkflowType = 'Journey'"):
        runs[execution.id] = runs.get(execution.id, 0) + 1
    return runs
