"""What the benchmark's phases share: the run's servers and state, event factories, producing and waiting."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bench.config import BenchConfig
from bench.processes import CpuMeter, EventflowEnv, EventflowProcess, PidSource, cpu_seconds
from bench.progress import Progress
from bench.stub import SendGridStub
from consumer.topics import ensure_topics
from devstack.postgres import PostgresServer
from events import samples
from events.producer import encode_event
from events.schemas import load as load_schemas

EncodedEvent = tuple[bytes, bytes]
#: Concurrent deletes of a phase's leftover workflows.
DELETE_CONCURRENCY = 64
#: How long to wait before asking visibility again for workflows it did not list yet.
DELETE_RELIST_SECONDS = 0.2


@dataclass(frozen=True)
class Servers:
    """The servers of the run, and the processes whose CPU is reported (name -> pid).

    Attributes:
        database: the run's own PostgreSQL server, which the outage phase stops and starts again
            (its pid is read live, as it changes at the restart); None skips that phase.
    """

    kafka: dict[str, str]
    client: Client
    temporal_address: str
    pids: Mapping[str, int] = field(default_factory=dict)
    database_url: str | None = None
    database: PostgresServer | None = None


@dataclass
class Run:
    """State shared by the phases of one run."""

    servers: Servers
    config: BenchConfig
    workdir: Path
    stub: SendGridStub
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped_settings: set[str] = field(default_factory=set)
    #: Seconds the Temporal server took to go quiet before a phase (`settle`), by phase.
    settled: dict[str, float] = field(default_factory=dict)
    #: Workflows deleted after a phase (`delete_workflows`), by task queue.
    deleted: dict[str, int] = field(default_factory=dict)

    async def settle(self, before: str) -> None:
        """Waits until the Temporal server is quiet: the work a phase leaves it (persisting the tasks of
        workflows no worker takes, deleting them after, `delete_workflows`) would otherwise be charged to
        whichever phase runs next."""
        pid = self.servers.pids.get("temporal server")
        if pid is None:
            return
        self.settled[before] = round(await wait_for_quiet(lambda: cpu_seconds(pid)), 1)

    async def delete_workflows(self, task_queue: str, started: int, timeout_seconds: float = 60.0) -> int:
        """Deletes the ``started`` workflows a phase left on ``task_queue`` (its workerless starts), so the
        next phase runs on a server holding no more than this one did; returns how many it deleted.

        Measured on the dev server: four identical raw start phases in a row read 359, 347, 317 and 295
        starts/s when each left its 4 000 open workflows behind, 416, 362, 346 and 378 when they were deleted.
        Visibility lists the last starts a little late, so it is asked again until all were deleted.
        """
        client = self.servers.client
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(workflow_id: str) -> None:
            async with gate:
                try:
                    await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
                        namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)))
                except RPCError as exc:
                    if exc.status is not RPCStatusCode.NOT_FOUND:
                        raise

        # Counted by id: visibility lists a deleted workflow until the deletion reaches it.
        deleted: set[str] = set()
        deadline = time.monotonic() + timeout_seconds
        while len(deleted) < started and time.monotonic() < deadline:
            ids = {execution.id async for execution in client.list_workflows(f"TaskQueue = '{task_queue}'")} - deleted
            await asyncio.gather(*(delete(workflow_id) for workflow_id in ids))
            deleted |= ids
            if not ids:
                await asyncio.sleep(DELETE_RELIST_SECONDS)
        self.deleted[task_queue] = len(deleted)
        return len(deleted)

    async def stop_and_delete(self, consumer: EventflowProcess, task_queue: str) -> None:
        """Stops a consumer that started journeys on a queue no worker polls, then deletes them."""
        started = await consumer.counter("eventflow_workflow_starts_total")
        await consumer.stop()
        await self.delete_workflows(task_queue, int(started))

    def meter(self, *extra: EventflowProcess, **pids: PidSource) -> CpuMeter:
        named: dict[str, PidSource] = {**self.servers.pids, "bench (starter, producer, stub)": os.getpid(), **pids}
        database = self.servers.database
        if database is not None:
            named["postgresql server"] = lambda: database.pid
        named.update({process.name: process.running_pid for process in extra})
        return CpuMeter(named)

    def database_pid(self) -> int | None:
        """The PostgreSQL postmaster's pid now (it changes when the outage phase restarts the server)."""
        if self.servers.database is not None:
            return self.servers.database.pid
        return self.servers.pids.get("postgresql server")

    def topic(self, name: str, partitions: int | None = None) -> str:
        topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        ensure_topics(self.servers.kafka, [topic, f"{topic}.dlq"], partitions=partitions or self.config.partitions)
        return topic

    def env(self, topics: tuple[str, ...], task_queue: str, *, sendgrid: bool) -> EventflowEnv:
        return EventflowEnv(self.servers.kafka["bootstrap.servers"], self.servers.temporal_address, topics,
                            f"bench-{uuid.uuid4().hex[:8]}", task_queue, self.workdir,
                            self.stub.base_url if sendgrid else None, self.config.concurrency,
                            database_url=self.servers.database_url)

    def process(self, command: str, env: EventflowEnv, name: str) -> EventflowProcess:
        process = EventflowProcess(command, env, name)
        self.dropped_settings.update(process.dropped_settings)
        return process


# --- events -------------------------------------------------------------------------------------

def encode_events(events: list[dict[str, Any]]) -> list[EncodedEvent]:
    schemas = load_schemas()
    return [(str(e["customer"]["id"]).encode(), encode_event(e, schemas)) for e in events]


def purchase_event(prefix: str) -> dict[str, Any]:
    return samples.purchase(samples.customer(), order_id=f"{prefix}{uuid.uuid4().hex[:12]}")


def shipped_event(customer: dict[str, Any], prefix: str) -> dict[str, Any]:
    return samples.event("OrderShipped", customer, {
        "order_id": f"{prefix}{uuid.uuid4().hex[:12]}", "carrier": "DHL",
        "tracking_number": uuid.uuid4().hex[:10], "estimated_delivery_at": None})


def unrouted_event() -> dict[str, Any]:
    # No journey listens to CheckoutStarted (ProfileUpdated now updates the customer's profile).
    return samples.event("CheckoutStarted", samples.customer(), {
        "cart_id": "cart-bench", "checkout_id": "co-bench", "cart_total": {"amount": "49.90", "currency": "EUR"}})


def kafka_producer(kafka: Mapping[str, str], *, batch: bool) -> Producer:
    tuning = ({"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
               "queue.buffering.max.messages": 1_000_000} if batch else {"linger.ms": 1})
    # log_level 4: librdkafka's informational lines (a purged background queue at close) would
    # interleave with the progress output.
    return Producer({**kafka, **tuning, "log_level": 4})


def produce_record(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def preload(kafka: Mapping[str, str], topic: str, values: list[EncodedEvent], total: int, label: str) -> None:
    """Writes ``total`` records to ``topic``, cycling through ``values``."""
    producer = kafka_producer(kafka, batch=True)
    progress = Progress(f"preload {label}", total)
    for index in range(total):
        key, value = values[index % len(values)]
        produce_record(producer, topic, key, value)
        if index % 5000 == 0:
            producer.poll(0)
            progress.update(index)
    producer.flush(120)
    progress.update(total)
    progress.close()


# --- measuring ----------------------------------------------------------------------------------

#: A server using less CPU than this (cores, over `QUIET_WINDOW_SECONDS`) is quiet.
QUIET_BELOW_CORES = 0.1
QUIET_WINDOW_SECONDS = 1.0


async def wait_for_quiet(read_cpu_seconds: Callable[[], float], *, timeout_seconds: float = 120.0,
                         clock: Callable[[], float] = time.monotonic,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
    """Waits until a process used under `QUIET_BELOW_CORES` over one window; returns the seconds waited
    (at most about ``timeout_seconds``: a process that never goes quiet is not waited on forever)."""
    started = clock()
    while clock() - started < timeout_seconds:
        before = read_cpu_seconds()
        await sleep(QUIET_WINDOW_SECONDS)
        if read_cpu_seconds() - before < QUIET_BELOW_CORES * QUIET_WINDOW_SECONDS:
            break
    return clock() - started


#: Until the counter first moves, it is read this often, so the phase's window opens within half of it;
#: near the target too, so it closes within one of the counter's last step.
FAST_POLL_SECONDS = 0.05
#: Between the two, a read is due when half of what remains should be counted, at most this far
#: apart. Each read is a whole ``/metrics`` exposition by the measured process, about 9 ms of its
#: CPU: every 0.5 s that was 6 % of the consumer's in the bridge phase (py-spy), a cost the raw
#: starter's in-process counter never paid.
SLOW_POLL_SECONDS = 2.0


def next_read_in(value: float, target: int, counting_for: float) -> float:
    """Seconds to the next read of a counter at ``value`` after ``counting_for`` seconds of counting."""
    if value <= 0 or counting_for <= 0:
        return FAST_POLL_SECONDS
    half_of_the_rest = (target - value) / (value / counting_for) / 2
    return min(SLOW_POLL_SECONDS, max(FAST_POLL_SECONDS, half_of_the_rest))


def crossing_time(before: tuple[float, float], after: tuple[float, float], target: float) -> float:
    """When a counter read ``before`` and ``after`` (time, value) reached ``target``, assuming a steady rate between."""
    (t0, v0), (t1, v1) = before, after
    if v1 <= v0 or target <= v0:
        return t1 if target > v0 else t0
    return t0 + (t1 - t0) * (min(target, v1) - v0) / (v1 - v0)


async def rate_of(read: Callable[[], Awaitable[float]], target: int, label: str, timeout_seconds: float,
                  alive: Callable[[], bool] = lambda: True, *, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
    """Rate of a counter from its first increment until it reaches ``target``.

    The first increment happened between the last read of 0 and the first read above it: the
    midpoint opens the window, so a small phase that completes between two reads still has a rate.
    The window closes when the counter crossed ``target``, interpolated between the two reads around it.
    """
    progress = Progress(label, target)
    started_at: float | None = None
    last_zero = clock()
    previous: tuple[float, float] | None = None
    deadline = last_zero + timeout_seconds
    try:
        while True:
            value = await read()
            now = clock()
            if value < 1:
                last_zero = now
            elif started_at is None:
                started_at = (last_zero + now) / 2
            progress.update(int(value))
            if value >= target:
                assert started_at is not None
                if previous is None or previous[1] < 1:
                    return value / max(now - started_at, 1e-6)
                return target / max(crossing_time(previous, (now, value), target) - started_at, 1e-6)
            if not alive():
                raise RuntimeError(f"{label}: the process exited at {value:.0f}/{target}")
            if now > deadline:
                raise TimeoutError(f"{label}: only {value:.0f}/{target} after {timeout_seconds:.0f}s")
            previous = (now, value)
            await sleep(FAST_POLL_SECONDS if started_at is None else next_read_in(value, target, now - started_at))
    finally:
        progress.close()


async def until(done: Callable[[], bool], deadline: float, interval: float = 0.2) -> None:
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(interval)


# --- the full path: eventflow consume + eventflow worker + SendGrid stub -------------------------

@dataclass
class FullPath:
    """The consumer and worker processes of the full-path phases, and their topics."""

    consumer: EventflowProcess
    worker: EventflowProcess
    topics: dict[str, str]
    task_queue: str = ""

    def alive(self) -> bool:
        return self.consumer.alive() and self.worker.alive()

    async def send_attempts(self) -> Counter[str]:
        """The worker's send attempts so far by outcome (its ``/metrics``; empty before it runs)."""
        attempts: Counter[str] = Counter()
        if self.worker.alive():
            for name, labels, value in await self.worker.metrics():
                if name == "eventflow_notifications_sent_total":
                    attempts[labels.get("outcome", "")] += int(value)
        return attempts

    async def settled_send_attempts(self, timeout_seconds: float = 10.0) -> Counter[str]:
        """`send_attempts` once it stopped changing: a send reaches the stub before its attempt is counted."""
        deadline = time.monotonic() + timeout_seconds
        previous = await self.send_attempts()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            current = await self.send_attempts()
            if current == previous:
                break
            previous = current
        return previous


def attempts_since(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {outcome: n for outcome, n in sorted((after - before).items()) if n}
