"""The bridge benchmark: throughput against the Temporal ceiling and a naive loop, unrouted rate,
end-to-end latency at half load and consumer RSS over a soak, all measured in one run.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from activities.outbox import OutboxChannel, read_outbox
from bench.progress import Progress, phase
from consumer.dead_letter import DeadLetterPublisher
from consumer.dispatch import Dispatcher
from consumer.metrics import ConsumerMetrics
from consumer.service import ConsumerService
from consumer.topics import ensure_topics
from eventflow.settings import ConsumerSettings, KafkaSettings
from events import samples
from events.codec import EventDecoder
from events.producer import EventProducer, encode_event
from events.schemas import load as load_schemas
from journeys.loader import load_all
from consumer.routes import EventRoutes
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput
from workflows.worker import build_worker


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run."""

    partitions: int = 6
    concurrency: int = 256
    routed_events: int = 4000
    naive_events: int = 200
    unrouted_events: int = 300_000
    latency_seconds: float = 30.0
    light_rate_per_second: float = 10.0
    soak_seconds: float = 600.0


SMOKE = BenchConfig(partitions=3, concurrency=64, routed_events=300, naive_events=30, unrouted_events=20_000,
                    latency_seconds=5.0, light_rate_per_second=5.0, soak_seconds=15.0)


@dataclass
class Servers:
    kafka: dict[str, str]
    client: Client
    temporal_address: str
    pids: dict[str, int] = field(default_factory=dict)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process (Temporal, Kafka, this one) spent during a phase: what bounds it."""

    def __init__(self, servers: Servers) -> None:
        self._pids = {**servers.pids, "eventflow (this process)": os.getpid()}
        self._start = {name: _cpu_seconds(pid) for name, pid in self._pids.items()}
        self._started_at = time.monotonic()

    def shares(self) -> dict[str, float]:
        """Each process's CPU use as a fraction of one core over the phase."""
        elapsed = time.monotonic() - self._started_at
        return {name: round((_cpu_seconds(pid) - self._start[name]) / elapsed, 2) for name, pid in self._pids.items()}


#: Per phase, each process's CPU use in cores (filled as phases run; reported with the results).
CPU_SHARES: dict[str, dict[str, float]] = {}


class Rate:
    """Measures a counter's rate from its first increment to its target, sampled every 5 ms."""

    def __init__(self, read: Callable[[], float], target: int, progress: Progress) -> None:
        self._read = read
        self._target = target
        self._progress = progress

    async def measure(self, timeout_seconds: float) -> float:
        started_at: float | None = None
        deadline = time.monotonic() + timeout_seconds
        while True:
            value = self._read()
            now = time.monotonic()
            if started_at is None and value >= 1:
                started_at, first = now, value
            self._progress.update(int(value))
            if value >= self._target:
                self._progress.close()
                assert started_at is not None
                elapsed = max(now - started_at, 1e-6)
                return (value - first) / elapsed
            if now > deadline:
                self._progress.close()
                raise TimeoutError(f"only {value}/{self._target} after {timeout_seconds}s")
            await asyncio.sleep(0.005)


def _kafka_settings(kafka: dict[str, str], topic: str, group: str) -> KafkaSettings:
    return KafkaSettings(kafka["bootstrap.servers"], (topic,), group, f"{topic}.dlq", {})


def _service(servers: Servers, topic: str, task_queue: str, concurrency: int,
             registry: CollectorRegistry) -> tuple[ConsumerService, ConsumerMetrics]:
    kafka = _kafka_settings(servers.kafka, topic, f"bench-{uuid.uuid4().hex[:8]}")
    metrics = ConsumerMetrics(registry)
    service = ConsumerService(
        kafka=kafka, settings=ConsumerSettings(max_in_flight=concurrency, shutdown_grace_seconds=10),
        decoder=EventDecoder(load_schemas()), router=EventRoutes(load_all()),
        dispatcher=Dispatcher(servers.client, task_queue),
        dead_letters=DeadLetterPublisher(kafka.client_config(), kafka.dlq_topic), metrics=metrics,
    )
    return service, metrics


def _preload(kafka: dict[str, str], topic: str, values: list[tuple[bytes, bytes]], total: int, label: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({**kafka, "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000})
    progress = Progress(f"preload {label}", total)
    for index in range(total):
        key, value = values[index % len(values)]
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 5000 == 0:
            producer.poll(0)
            progress.update(index)
    producer.flush(120)
    progress.update(total)
    progress.close()


def _purchases(count: int) -> list[dict[str, Any]]:
    return [samples.purchase(samples.customer()) for _ in range(count)]


def _encoded(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    schemas = load_schemas()
    return [(str(e["customer"]["id"]).encode(), encode_event(e, schemas)) for e in events]


def _counter_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def _run_service_until(service: ConsumerService, rate: Rate, timeout_seconds: float) -> float:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        return await rate.measure(timeout_seconds)
    finally:
        stop.set()
        await task


async def measure_ceiling(servers: Servers, config: BenchConfig) -> float:
    """Raw start_workflow throughput of one async client at the bridge's concurrency."""
    phase("ceiling: raw start_workflow with one async client")
    snapshot = load_all()[0].snapshot()
    events = [samples.purchase(samples.customer()) for _ in range(config.routed_events)]
    from events.codec import EventDecoder as _Decoder

    decoder = _Decoder(load_schemas())
    decoded = [decoder(v) for _, v in _encoded(events)]
    task_queue = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    semaphore = asyncio.Semaphore(config.concurrency)
    done = 0

    async def start(event: Any) -> None:
        nonlocal done
        async with semaphore:
            await servers.client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput(journey=snapshot, event=event), id=f"bench:{event.event_id}",
                task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
            done += 1

    rate = Rate(lambda: float(done), len(decoded), Progress("ceiling", len(decoded)))
    meter = CpuMeter(servers)
    starts = asyncio.gather(*(start(e) for e in decoded))
    measured = await rate.measure(300)
    await starts
    CPU_SHARES["ceiling"] = meter.shares()
    return measured


async def measure_bridge(servers: Servers, config: BenchConfig) -> float:
    phase(f"bridge: {config.routed_events} routed events, {config.partitions} partitions, "
          f"in-flight bound {config.concurrency}")
    topic = f"bench-routed-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers.kafka, [topic, f"{topic}.dlq"], partitions=config.partitions)
    _preload(servers.kafka, topic, _encoded(_purchases(config.routed_events)), config.routed_events, "routed")
    registry = CollectorRegistry()
    service, _ = _service(servers, topic, f"bench-bridge-{uuid.uuid4().hex[:8]}", config.concurrency, registry)
    rate = Rate(lambda: _counter_sum(registry, "eventflow_workflow_starts_total"), config.routed_events,
                Progress("bridge", config.routed_events))
    meter = CpuMeter(servers)
    measured = await _run_service_until(service, rate, 600)
    CPU_SHARES["bridge"] = meter.shares()
    return measured


async def measure_naive(servers: Servers, config: BenchConfig) -> float:
    """Poll one record, await its start, commit synchronously, repeat."""
    phase(f"naive baseline: {config.naive_events} events one at a time")
    topic = f"bench-naive-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers.kafka, [topic], partitions=config.partitions)
    _preload(servers.kafka, topic, _encoded(_purchases(config.naive_events)), config.naive_events, "naive")
    consumer = Consumer({**servers.kafka, "group.id": f"bench-naive-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    decoder, router = EventDecoder(load_schemas()), EventRoutes(load_all())
    dispatcher = Dispatcher(servers.client, f"bench-naive-{uuid.uuid4().hex[:8]}")
    progress = Progress("naive", config.naive_events)
    handled, started_at = 0, 0.0
    try:
        while handled < config.naive_events:
            message = await asyncio.to_thread(consumer.poll, 1.0)
            if message is None or message.error() is not None:
                continue
            if handled == 0:
                started_at = time.monotonic()
            event = decoder(message.value() or b"")
            for action in router.route(event):
                await dispatcher.apply(event, action)
            consumer.commit(message=message, asynchronous=False)
            handled += 1
            progress.update(handled)
    finally:
        progress.close()
        consumer.close()
    return (handled - 1) / (time.monotonic() - started_at)


async def measure_unrouted(servers: Servers, config: BenchConfig) -> float:
    phase(f"unrouted: {config.unrouted_events} events no journey listens to")
    topic = f"bench-unrouted-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers.kafka, [topic, f"{topic}.dlq"], partitions=config.partitions)
    profile_updates = [samples.event("ProfileUpdated", samples.customer(), {"changed_fields": ["locale"]})
                       for _ in range(1000)]
    _preload(servers.kafka, topic, _encoded(profile_updates), config.unrouted_events, "unrouted")
    registry = CollectorRegistry()
    service, _ = _service(servers, topic, "bench-unused", config.concurrency, registry)
    rate = Rate(lambda: _counter_sum(registry, "eventflow_events_consumed_total", outcome="unrouted"),
                config.unrouted_events, Progress("unrouted", config.unrouted_events))
    meter = CpuMeter(servers)
    measured = await _run_service_until(service, rate, 600)
    CPU_SHARES["unrouted"] = meter.shares()
    return measured


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_latency(servers: Servers, config: BenchConfig, rate_per_second: float,
                          workdir: Path) -> dict[str, float]:
    """Produce at ``rate_per_second`` and time each event from produce to the outbox write."""
    phase(f"end-to-end latency at {rate_per_second:.0f} events/s for {config.latency_seconds:.0f}s")
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers.kafka, [topic, f"{topic}.dlq"], partitions=config.partitions)
    task_queue = f"bench-latency-{uuid.uuid4().hex[:8]}"
    outbox = workdir / f"outbox-{task_queue}.jsonl"
    channel = OutboxChannel(outbox)
    worker = build_worker(servers.client, task_queue, {"email": channel, "sms": channel, "whatsapp": channel},
                          max_concurrent_activities=200)
    registry = CollectorRegistry()
    service, _ = _service(servers, topic, task_queue, config.concurrency, registry)
    stop = asyncio.Event()
    produced_at: dict[str, float] = {}
    producer = EventProducer(servers.kafka, topic, load_schemas())
    total = int(rate_per_second * config.latency_seconds)
    meter = CpuMeter(servers)
    async with worker:
        consumer_task = asyncio.create_task(service.run(stop))
        await asyncio.sleep(3)
        started = time.monotonic()
        progress = Progress("latency", total)
        for index in range(total):
            event = samples.purchase(samples.customer())
            produced_at[str(event["payload"]["order_id"])] = time.time()
            producer.send(event)
            producer._producer.poll(0)
            target = started + (index + 1) / rate_per_second
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            progress.update(index + 1)
        progress.close()
        await producer.flush_async()
        deadline = time.monotonic() + 60
        while len(read_outbox(outbox)) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        stop.set()
        await consumer_task
    latencies = []
    for message in read_outbox(outbox):
        order_id = str(message["workflow_id"]).rsplit(":", 1)[-1]
        if order_id in produced_at:
            latencies.append(float(message["sent_at"]) - produced_at[order_id])  # type: ignore[arg-type]  # JSON number
    CPU_SHARES[f"latency at {rate_per_second:.0f}/s"] = meter.shares()
    return {
        "events": float(total),
        "delivered": float(len(latencies)),
        "p50_seconds": _percentile(latencies, 0.50),
        "p95_seconds": _percentile(latencies, 0.95),
        "p99_seconds": _percentile(latencies, 0.99),
        "mean_seconds": statistics.fmean(latencies) if latencies else float("nan"),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure_soak(servers: Servers, config: BenchConfig, workdir: Path) -> dict[str, float]:
    """Runs ``eventflow consume`` as its own process under steady load and samples its RSS each second."""
    phase(f"soak: consumer RSS over {config.soak_seconds:.0f}s of steady load")
    topic = f"bench-soak-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers.kafka, [topic, f"{topic}.dlq"], partitions=config.partitions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLOW_")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": servers.kafka["bootstrap.servers"],
                "TEMPORAL_ADDRESS": servers.temporal_address, "EVENTFLOW_TOPICS": topic,
                "EVENTFLOW_CONSUMER_GROUP": f"bench-soak-{uuid.uuid4().hex[:8]}", "EVENTFLOW_DLQ_TOPIC": f"{topic}.dlq",
                "EVENTFLOW_TASK_QUEUE": f"bench-soak-{uuid.uuid4().hex[:8]}", "EVENTFLOW_METRICS_PORT": "0",
                "EVENTFLOW_LOG_FORMAT": "json"})
    log = (workdir / "soak-consumer.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "eventflow.cli", "consume"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    producer = EventProducer(servers.kafka, topic, load_schemas())
    unrouted = samples.event("ProfileUpdated", samples.customer(), {"changed_fields": ["locale"]})
    samples_kib: list[tuple[float, int]] = []
    started = time.monotonic()
    progress = Progress("soak", int(config.soak_seconds))
    try:
        while (elapsed := time.monotonic() - started) < config.soak_seconds:
            for _ in range(200):
                producer.send(unrouted)
            producer.send(samples.purchase(samples.customer()))
            await asyncio.to_thread(producer._producer.flush, 10)
            samples_kib.append((elapsed, _rss_kib(process.pid)))
            progress.update(int(elapsed))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
    finally:
        progress.close()
        process.terminate()
        process.wait(30)
    warm = [kib for t, kib in samples_kib if t >= config.soak_seconds * 0.1]
    window = max(1, len(warm) // 10)
    first, last = statistics.fmean(warm[:window]), statistics.fmean(warm[-window:])
    return {"seconds": config.soak_seconds, "rss_start_mib": first / 1024, "rss_end_mib": last / 1024,
            "rss_max_mib": max(warm) / 1024, "growth_ratio": last / first - 1}


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {"cores": os.cpu_count(), "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform()}


async def run(servers: Servers, config: BenchConfig, workdir: Path) -> dict[str, Any]:
    ceiling = await measure_ceiling(servers, config)
    bridge = await measure_bridge(servers, config)
    naive = await measure_naive(servers, config)
    unrouted = await measure_unrouted(servers, config)
    latency = await measure_latency(servers, config, bridge / 2, workdir)
    light = await measure_latency(servers, config, config.light_rate_per_second, workdir)
    soak = await measure_soak(servers, config, workdir)
    ratios = {"bridge_vs_ceiling": bridge / ceiling, "bridge_vs_naive": bridge / naive}
    targets = {
        "bridge >= 0.9 x ceiling": ratios["bridge_vs_ceiling"] >= 0.9,
        "bridge >= 20 x naive": ratios["bridge_vs_naive"] >= 20,
        "unrouted >= 50000 events/s": unrouted >= 50_000,
        "p99 end-to-end < 1 s at half load": latency["p99_seconds"] < 1.0,
        "RSS flat within 10 % over the soak": abs(soak["growth_ratio"]) <= 0.10,
    }
    return {
        "machine": machine(),
        "config": asdict(config),
        "throughput_events_per_second": {"ceiling_start_workflow": ceiling, "bridge": bridge, "naive": naive,
                                         "unrouted": unrouted},
        "ratios": ratios,
        "latency": latency,
        "latency_light_load": {**light, "rate_per_second": config.light_rate_per_second},
        "soak": soak,
        "cpu_cores_used_per_phase": CPU_SHARES,
        "targets_met": targets,
    }
