"""The benchmark's phases, all on the same Kafka broker and Temporal server in one run.

Raw ceilings first (what the servers allow with nothing of Eventflow in the way), then the same
work through Eventflow's own processes (``eventflow consume`` and ``eventflow worker``, with the
SendGrid channel pointed at a local stub that counts and timestamps every send). Every target is a
ratio between the two, or an exact count at the stub.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from bench.audience import broadcast_key_prefix, run_audience_phases
from bench.common import (
    FullPath,
    Run,
    Servers,
    attempts_since,
    encode_events,
    kafka_producer,
    preload,
    produce_record,
    purchase_event,
    rate_of,
    shipped_event,
    unrouted_event,
    until,
)
from bench.config import QUICK, BenchConfig
from bench.faults import run_fault_phase
from bench.history import HistoryCost, history_cost
from bench.outage import PREFIX as OUTAGE_PREFIX
from bench.outage import measure_database_outage
from bench.processes import BENCH_JOURNEYS, ROOT, rss_mib, tree_memory_by_process
from bench.progress import Progress, phase
from bench.raw import RAW_WORKFLOW, RawInput
from bench.stats import (
    InterleavedRatio,
    growth_ratio,
    interleaved_ratio,
    lasting_growth,
    middle_rate,
    rate_per_second,
    summarize_latency,
)
from bench.stub import SendGridStub
from consumer.routes import EventRoutes
from consumer.service import BRIDGE_CONSUMER_CONFIG
from events import samples
from events.codec import EventDecoder
from events.producer import encode_event
from events.schemas import load as load_schemas
from journeys.loader import load_all
from journeys.routing import Action
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput

__all__ = ["QUICK", "BenchConfig", "Servers", "run", "targets"]

HOT_DAILY_CAP = 3  # bench/journeys/definitions/bench_hot_customer.yaml
#: Full-path phases (their JSON key) and the order-id prefix of their events, by which the stub tells them apart.
FULL_PATH_PHASES = {"capacity": "cap-", "latency_light_load": "lat-light-", "latency_half_capacity": "lat-half-",
                    "hot_customer": "hot-", "soak": "soak-", "database_outage": OUTAGE_PREFIX}


# --- raw ceilings -------------------------------------------------------------------------------

async def measure_start_ceiling(run: Run, label: str = "raw start ceiling") -> float:
    """Raw ``start_workflow`` throughput (journey workflows, no worker) at the consumer's concurrency."""
    config = run.config
    phase(f"{label}: {config.routed_events} start_workflow calls, {config.concurrency} concurrent")
    snapshot = next(d for d in load_all(BENCH_JOURNEYS) if d.id == "bench_thank_you").snapshot()
    decoder = EventDecoder(load_schemas())
    decoded = [decoder(value) for _, value in encode_events([purchase_event("ceil-") for _ in range(config.routed_events)])]
    task_queue = f"bench-no-worker-{uuid.uuid4().hex[:8]}"
    semaphore = asyncio.Semaphore(config.concurrency)
    done = 0

    async def start(event: Any) -> None:
        nonlocal done
        async with semaphore:
            await run.servers.client.start_workflow(
                JOURNEY_WORKFLOW, JourneyInput.starting(snapshot, event), id=f"bench:{event.event_id}",
                task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
            done += 1

    async def read() -> float:
        return float(done)

    meter = run.meter()
    starts = asyncio.gather(*(start(e) for e in decoded))
    try:
        measured = await rate_of(read, len(decoded), "raw starts", config.phase_timeout_seconds)
    finally:
        await starts
    run.cpu[label] = meter.cores()
    await run.delete_workflows(task_queue, done)
    return measured


@dataclass(frozen=True)
class RawCeiling:
    """One raw notification phase: its rate first to last, over the middle 90 %, the floor, the cost."""

    rate: float
    middle_rate: float
    floor: list[float]
    cost: HistoryCost


async def measure_raw_notifications(run: Run, label: str = "raw notification ceiling", *,
                                    floor_samples: int | None = None) -> RawCeiling:
    """The raw ceiling (start + one no-op activity, concurrent) and the start -> activity floor (sequential).

    Args:
        floor_samples: workflows timed one at a time before the ceiling; the config's by default.
    """
    config = run.config
    samples = config.floor_samples if floor_samples is None else floor_samples
    phase(f"{label}: {config.raw_workflows} workflows running one no-op activity")
    task_queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    record = run.workdir / f"{task_queue}.times"
    record.touch()
    log = (run.workdir / "raw-worker.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "bench.raw", "--address", run.servers.temporal_address,
                               "--task-queue", task_queue, "--record", str(record)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    client = run.servers.client
    try:
        # The floor first, at no load: one workflow at a time, start -> activity.
        floor: list[float] = []
        for index in range(samples):
            started = time.time()
            handle = await client.start_workflow(RAW_WORKFLOW, RawInput(f"floor-{index}"),
                                                 id=f"bench-raw-floor-{uuid.uuid4().hex}", task_queue=task_queue)
            try:
                ran_at = float(await asyncio.wait_for(handle.result(), timeout=90))
            except TimeoutError:
                log_text = (run.workdir / "raw-worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"raw worker (exit code {worker.poll()}) ran nothing:\n{log_text}") from None
            if index > 0:  # the first one also waits for the worker to finish starting
                floor.append(ran_at - started)
        # Then the ceiling: every workflow started at once; the worker records when each activity ran.
        semaphore = asyncio.Semaphore(config.concurrency)

        async def start(index: int) -> None:
            async with semaphore:
                await client.start_workflow(RAW_WORKFLOW, RawInput(f"ceiling-{index}"),
                                            id=f"bench-raw-{uuid.uuid4().hex}", task_queue=task_queue)

        def ran() -> list[float]:
            return [float(line.split()[1]) for line in record.read_text().splitlines() if line.startswith("ceiling-")]

        if not samples:  # nothing has waited for the worker to start: the ceiling's clock must not
            await client.execute_workflow(RAW_WORKFLOW, RawInput("warm-up"), id=f"bench-raw-warm-{uuid.uuid4().hex}",
                                          task_queue=task_queue, execution_timeout=timedelta(seconds=90))
        meter = run.meter(**{"raw worker": worker.pid})
        starts = asyncio.gather(*(start(i) for i in range(config.raw_workflows)))
        progress = Progress("raw notifications", config.raw_workflows)
        deadline = time.monotonic() + config.phase_timeout_seconds
        while (done := len(ran())) < config.raw_workflows:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise TimeoutError(f"raw notifications: {done}/{config.raw_workflows} ran")
            progress.update(done)
            await asyncio.sleep(0.2)
        progress.update(done)
        progress.close()
        await starts
        run.cpu[label] = meter.cores()
        started = max(samples, 1) + config.raw_workflows
        cost = await history_cost(client, task_queue, started)
        await run.delete_workflows(task_queue, started)
        return RawCeiling(rate_per_second(ran()), middle_rate(ran()), floor, cost)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)


#: Raw consume-loop repeats; the median is reported (a single short pass moved tenfold between runs).
RAW_CONSUME_REPEATS = 5
#: Records read before a raw pass starts its clock: the first fetch round trips and librdkafka's
#: queue filling are start-up, not the loop's rate.
RAW_CONSUME_WARMUP_FRACTION = 0.1
#: Least time a raw pass is timed over: the topic is read again from its beginning until then, so a
#: small topic read at a million records a second is still timed over enough records to be stable.
RAW_CONSUME_MIN_SECONDS = 1.0
#: Most reads of the topic per pass (each seek back costs a fetch round trip, which is not timed).
RAW_CONSUME_MAX_READS = 10


def _raw_consume_pass(kafka: Mapping[str, str], topic: str, total: int) -> float:
    """One pass of a bare confluent-kafka loop: consume batches and count, nothing else.

    It assigns the partitions from the beginning (no group join to wait for), fetches with the
    bridge's own fetch settings (`BRIDGE_CONSUMER_CONFIG`, so both loops get the same fetch), and
    times the records after the warm-up. The topic is read again until `RAW_CONSUME_MIN_SECONDS`
    were timed; each new read's clock starts at its first record (the seek back is not the loop).
    """
    consumer = Consumer({**kafka, **BRIDGE_CONSUMER_CONFIG, "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 4})
    start = [TopicPartition(topic, p, 0) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
    warmup = int(total * RAW_CONSUME_WARMUP_FRACTION)
    counted, timed, reads = 0, 0.0, 0
    deadline = time.monotonic() + 600
    consumer.assign(start)
    try:
        while timed < RAW_CONSUME_MIN_SECONDS and reads < RAW_CONSUME_MAX_READS:
            reads += 1
            if counted:
                for partition in start:
                    consumer.seek(partition)
            # The first read starts its clock after the warm-up, later ones at their first record.
            skip = warmup if counted == 0 else 1
            count, started_at = 0, 0.0
            while count < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw consume: only {count}/{total}")
                for message in consumer.consume(1000, 0.5):
                    if message.error() is None:
                        count += 1
                        if count == skip:
                            started_at = time.monotonic()
            timed += time.monotonic() - started_at
            counted += count - skip
        return counted / timed
    finally:
        consumer.close()


def _raw_consume(kafka: Mapping[str, str], topic: str, total: int) -> float:
    """The raw consume loop's rate: the median of `RAW_CONSUME_REPEATS` warmed-up passes over the topic."""
    rates = sorted(_raw_consume_pass(kafka, topic, total) for _ in range(RAW_CONSUME_REPEATS))
    return rates[len(rates) // 2]


# --- Eventflow processes alone -------------------------------------------------------------------

async def in_rounds(rounds: int, ceiling: Callable[[int], Awaitable[float]],
                    measure: Callable[[int], Awaitable[float]]) -> InterleavedRatio:
    """``ceiling(0)``, then ``measure(n)`` and ``ceiling(n)`` for each round ``n`` from 1, as `interleaved_ratio`.

    The dev server's rates drift within a run and swing a quarter between phases, so each round is
    compared with the ceiling read either side of it, and the median round's ratio is the figure.
    """
    ceilings = [await ceiling(0)]
    measured: list[float] = []
    for index in range(1, rounds + 1):
        measured.append(await measure(index))
        ceilings.append(await ceiling(index))
    return interleaved_ratio(measured, ceilings)


def _round_label(name: str, index: int) -> str:
    return name if index == 1 else f"{name} (round {index})"


async def measure_bridge_rounds(run: Run) -> InterleavedRatio:
    """`measure_bridge` ``bridge_rounds`` times, with a raw start ceiling before the first round and after each."""

    async def ceiling(after: int) -> float:
        label = f"raw start ceiling (after bridge round {after})" if after else "raw start ceiling"
        await run.settle(label)
        return await measure_start_ceiling(run, label)

    async def bridge(index: int) -> float:
        label = _round_label("bridge", index)
        await run.settle(label)
        return await measure_bridge(run, label)

    return await in_rounds(run.config.bridge_rounds, ceiling, bridge)


async def measure_bridge(run: Run, label: str = "bridge") -> float:
    """``eventflow consume`` turning preloaded events into workflow starts (no worker)."""
    config = run.config
    phase(f"{label}: eventflow consume, {config.routed_events} routed events, in-flight {config.concurrency}")
    topic = run.topic("routed")
    preload(run.servers.kafka, topic, encode_events([purchase_event("bridge-") for _ in range(config.routed_events)]),
             config.routed_events, "routed")
    task_queue = f"bench-no-worker-{uuid.uuid4().hex[:8]}"
    consumer = run.process("consume", run.env((topic,), task_queue, sendgrid=False), "consumer")
    consumer.start()
    try:
        meter = run.meter(consumer)
        try:
            measured = await rate_of(lambda: consumer.counter("eventflow_workflow_starts_total"),
                                      config.routed_events, label, config.phase_timeout_seconds, consumer.alive)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- consumer log:\n{consumer.log_tail()}") from exc
        run.cpu[label] = meter.cores()
    except BaseException:
        await consumer.stop()
        raise
    await run.stop_and_delete(consumer, task_queue)
    return measured


async def measure_unrouted(run: Run) -> tuple[float, float]:
    """Events no journey listens to: a raw confluent-kafka loop, then ``eventflow consume``, same topic."""
    config = run.config
    phase(f"unrouted: {config.unrouted_events} events, raw confluent-kafka loop then eventflow consume")
    topic = run.topic("unrouted")
    preload(run.servers.kafka, topic, encode_events([unrouted_event() for _ in range(1000)]), config.unrouted_events,
             "unrouted")
    meter = run.meter()
    raw = await asyncio.to_thread(_raw_consume, run.servers.kafka, topic, config.unrouted_events)
    run.cpu["unrouted: raw consume loop"] = meter.cores()
    consumer = run.process("consume", run.env((topic,), "bench-unused", sendgrid=False), "consumer")
    consumer.start()
    try:
        meter = run.meter(consumer)
        try:
            measured = await rate_of(
                lambda: consumer.counter("eventflow_events_consumed_total", outcome="unrouted"),
                config.unrouted_events, "unrouted", config.phase_timeout_seconds, consumer.alive)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- consumer log:\n{consumer.log_tail()}") from exc
        run.cpu["unrouted: eventflow consume"] = meter.cores()
        return raw, measured
    finally:
        await consumer.stop()


# --- the full path: eventflow consume + eventflow worker + SendGrid stub -------------------------

async def measure_capacity(run: Run, full: FullPath, prefix: str, label: str,
                           events: int | None = None) -> dict[str, Any]:
    """Preloaded events through freshly started processes until every notification reached the stub.

    The events (order ids starting with ``prefix``) are written before the processes start, and the
    processes are stopped after, so the raw phase between two rounds runs without them.
    """
    config = run.config
    total = config.capacity_events if events is None else events
    phase(f"{label}: {total} preloaded events, eventflow consume + eventflow worker")
    preload(run.servers.kafka, full.topics["cap-"], encode_events([purchase_event(prefix) for _ in range(total)]),
             total, label)
    full.worker.start()
    full.consumer.start()
    try:
        await full.worker.wait_ready()
        meter = run.meter(full.consumer, full.worker)
        progress = Progress(label, total)
        deadline = time.monotonic() + config.phase_timeout_seconds
        while (sent := len(run.stub.first_sends(prefix))) < total and time.monotonic() < deadline and full.alive():
            progress.update(sent)
            await asyncio.sleep(0.2)
        progress.update(sent)
        progress.close()
        if not full.alive():
            raise RuntimeError(f"an eventflow process exited:\n{full.consumer.log_tail()}\n{full.worker.log_tail()}")
        run.cpu[label] = meter.cores()
        first = run.stub.first_sends(prefix)
        at = [r.at_epoch_seconds for r in first.values()]
        return {"events": total, "sent": len(first), "duplicates": run.stub.duplicates(prefix),
                "notifications_per_second": round(rate_per_second(at), 3),
                "notifications_per_second_middle_90": round(middle_rate(at), 3),
                "worker_send_attempts": attempts_since(Counter(), await full.settled_send_attempts())}
    finally:
        await full.consumer.stop()
        await full.worker.stop()


@dataclass(frozen=True)
class CapacityRounds:
    """The full path's capacity rounds, each between two raw notification ceilings."""

    rounds: list[dict[str, Any]]
    figures: InterleavedRatio
    floor: list[float]
    raw_cost: HistoryCost
    cost: HistoryCost
    #: The same rounds and ceilings, each phase's rate over the middle 90 % of its completions.
    middle: InterleavedRatio
    warm_up_events: int

    def as_json(self) -> dict[str, Any]:
        """The ``capacity`` figures: every round's sends and attempts summed, the median round's rate."""
        attempts: Counter[str] = Counter()
        for figures in self.rounds:
            attempts.update(figures["worker_send_attempts"])
        return {"events": sum(r["events"] for r in self.rounds), "sent": sum(r["sent"] for r in self.rounds),
                "duplicates": sum(r["duplicates"] for r in self.rounds), "rounds": len(self.rounds),
                "temporal_cost": self.cost.as_json(),
                "notifications_per_second": round(self.figures.measured_median, 3),
                "notifications_per_second_by_round": [round(value, 3) for value in self.figures.measured],
                "ratio_by_round": [round(value, 4) for value in self.figures.ratios],
                "notifications_per_second_middle_90_by_round": [round(value, 3) for value in self.middle.measured],
                "ratio_middle_90_by_round": [round(value, 4) for value in self.middle.ratios],
                "warm_up_events": self.warm_up_events,
                "worker_send_attempts": dict(sorted(attempts.items()))}


#: Notifications sent through the full path before its first capacity round, not counted. A raw
#: phase starts its clock after a warm-up workflow has run on its queue; without this the first
#: round alone carries the first use of the journeys' task queues, the consumer group and the tables
#: (it was the lowest round in 6 of 7 runs, with every process as busy as in later rounds).
WARM_UP_EVENTS = 20


async def warm_full_path(run: Run, full: FullPath) -> int:
    """Sends `WARM_UP_EVENTS` (at most a round's size) through freshly started processes; figures discarded."""
    total = max(1, min(WARM_UP_EVENTS, run.config.capacity_events))
    await measure_capacity(run, full, "warm-", "full path warm-up (not counted)", events=total)
    return total


async def measure_capacity_rounds(run: Run, full: FullPath) -> CapacityRounds:
    """`measure_capacity` ``capacity_rounds`` times, a raw notification ceiling before the first and after each.

    The first raw phase also times the start -> activity floor; the figure is `in_rounds`'s.
    """
    ceilings: list[RawCeiling] = []
    rounds: list[dict[str, Any]] = []
    await run.settle("full path warm-up")
    warm = await warm_full_path(run, full)

    async def ceiling(after: int) -> float:
        label = f"raw notification ceiling (after capacity round {after})" if after else "raw notification ceiling"
        await run.settle(label)
        ceilings.append(await measure_raw_notifications(run, label, floor_samples=0 if after else None))
        return ceilings[-1].rate

    async def capacity(index: int) -> float:
        label = _round_label("full path capacity", index)
        await run.settle(label)
        rounds.append(await measure_capacity(run, full, f"cap-{index}-", label))
        return float(rounds[-1]["notifications_per_second"])

    figures = await in_rounds(run.config.capacity_rounds, ceiling, capacity)
    # Every round's journeys, and the warm-up's, ran on the one task queue: the cost is of all their notifications.
    cost = await history_cost(run.servers.client, full.task_queue, sum(r["sent"] for r in rounds) + warm)
    middle = interleaved_ratio([r["notifications_per_second_middle_90"] for r in rounds],
                               [c.middle_rate for c in ceilings])
    return CapacityRounds(rounds, figures, ceilings[0].floor, ceilings[0].cost, cost, middle, warm)


async def measure_latency(run: Run, full: FullPath, rate: float, prefix: str, label: str) -> dict[str, Any]:
    """Produce at ``rate`` for the phase's seconds; produce -> provider call over every produced event."""
    config = run.config
    total = max(1, round(rate * config.latency_seconds))
    phase(f"latency {label}: {rate:.2f} events/s for {config.latency_seconds:.0f}s ({total} events)")
    schemas = load_schemas()
    producer = kafka_producer(run.servers.kafka, batch=False)
    produced_at: dict[str, float] = {}
    meter = run.meter(full.consumer, full.worker)
    attempts = await full.send_attempts()
    progress = Progress(f"latency {label}", total)
    started = time.monotonic()
    for index in range(total):
        event = purchase_event(prefix)
        value = encode_event(event, schemas)
        produced_at[str(event["payload"]["order_id"])] = time.time()
        produce_record(producer, full.topics[prefix], str(event["customer"]["id"]).encode(), value)
        producer.poll(0)
        progress.update(index + 1)
        delay = started + (index + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    progress.close()
    await asyncio.to_thread(producer.flush, 30)
    await until(lambda: len(run.stub.first_sends(prefix)) >= total, time.monotonic() + config.drain_seconds)
    run.cpu[f"latency {label}"] = meter.cores()
    first = run.stub.first_sends(prefix)
    latencies = [first[order].at_epoch_seconds - at for order, at in produced_at.items() if order in first]
    summary = summarize_latency(latencies, total)
    return {"rate_per_second": round(rate, 3), "seconds": config.latency_seconds, **summary.as_json(),
            "duplicates": run.stub.duplicates(prefix),
            "worker_send_attempts": attempts_since(attempts, await full.settled_send_attempts())}


def _workflow_id(routes: EventRoutes, event: dict[str, Any]) -> str:
    decoded = EventDecoder(load_schemas())(encode_event(event, load_schemas()))
    starts = [r for r in routes.route(decoded) if isinstance(r, Action)]
    return starts[0].workflow_id


def _send_status(result: Any) -> str:
    sends = result.get("sends") if isinstance(result, dict) else getattr(result, "sends", None)
    if not sends:
        return "no send"
    send = sends[0]
    return str(send.get("status") if isinstance(send, dict) else getattr(send, "status", "unknown"))


async def measure_hot_customer(run: Run, full: FullPath) -> dict[str, Any]:
    """``hot_journeys`` journeys of one customer sending at once with a daily cap of 3 on email."""
    config = run.config
    phase(f"hot customer: {config.hot_journeys} journeys of one customer at once, daily cap {HOT_DAILY_CAP}")
    customer = samples.customer()
    events = [shipped_event(customer, "hot-") for _ in range(config.hot_journeys)]
    routes = EventRoutes(load_all(BENCH_JOURNEYS))
    workflow_ids = [_workflow_id(routes, event) for event in events]
    producer = kafka_producer(run.servers.kafka, batch=True)
    meter = run.meter(full.consumer, full.worker)
    attempts = await full.send_attempts()
    for key, value in encode_events(events):
        produce_record(producer, full.topics["hot-"], key, value)
    await asyncio.to_thread(producer.flush, 30)

    async def outcome(workflow_id: str) -> str:
        handle = run.servers.client.get_workflow_handle(workflow_id)
        deadline = time.monotonic() + config.drain_seconds + 60
        while True:
            try:
                remaining = max(1.0, deadline - time.monotonic())
                return _send_status(await asyncio.wait_for(handle.result(), timeout=remaining))
            except WorkflowFailureError as exc:
                return f"workflow failed: {type(exc.cause).__name__}"
            except TimeoutError:
                return "not finished"
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                if time.monotonic() > deadline:
                    return "never started"
                await asyncio.sleep(0.5)  # the consumer has not started it yet

    statuses = Counter(await asyncio.gather(*(outcome(w) for w in workflow_ids)))
    run.cpu["hot customer"] = meter.cores()
    sent_at_stub = len(run.stub.first_sends("hot-"))
    capped = statuses.get("capped", 0)
    return {"journeys": config.hot_journeys, "daily_cap": HOT_DAILY_CAP, "sent": sent_at_stub, "capped": capped,
            "errors": sum(n for status, n in statuses.items() if status not in ("sent", "capped")),
            "duplicates": run.stub.duplicates("hot-"), "journey_send_statuses": dict(statuses),
            "worker_send_attempts": attempts_since(attempts, await full.settled_send_attempts())}


async def measure_soak(run: Run, full: FullPath, capacity: float) -> dict[str, Any]:
    """Steady load for ``soak_seconds`` while the memory of consumer, worker and PostgreSQL is sampled every second.

    PostgreSQL's is the proportional set size of the postmaster and its backends without the shared
    buffer cache, which is reported beside it (`tree_memory_by_process`); judged over the processes
    that lived through the soak (`lasting_growth`: a backend forked for a new pool connection is no
    process growing), with the whole tree's sum and process counts beside it. It is left out when the
    run has no PostgreSQL server of its own.
    """
    config = run.config
    routed_rate = min(config.soak_routed_per_second, max(capacity / 4, 0.2))
    phase(f"soak: {config.soak_seconds:.0f}s at {routed_rate:.2f} notifications/s "
          f"+ {config.soak_unrouted_per_second:g} unrouted events/s")
    schemas = load_schemas()
    producer = kafka_producer(run.servers.kafka, batch=False)
    unrouted = encode_events([unrouted_event() for _ in range(100)])
    rss: dict[str, list[float]] = {"consumer": [], "worker": []}
    shared: list[float] = []  # PostgreSQL's buffer cache, apart (`tree_memory_by_process`)
    database: list[dict[int, float]] = []  # each PostgreSQL process's memory without it
    if run.database_pid() is not None:
        rss["postgresql"] = []
    produced = 0
    routed_credit = 0.0
    meter = run.meter(full.consumer, full.worker)
    attempts = await full.send_attempts()
    progress = Progress("soak", int(config.soak_seconds))
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < config.soak_seconds and full.alive():
        routed_credit += routed_rate
        while routed_credit >= 1:
            event = purchase_event("soak-")
            key = str(event["customer"]["id"]).encode()
            produce_record(producer, full.topics["soak-"], key, encode_event(event, schemas))
            produced += 1
            routed_credit -= 1
        for index in range(int(config.soak_unrouted_per_second)):
            key, value = unrouted[index % len(unrouted)]
            produce_record(producer, full.topics["soak-"], key, value)
        producer.poll(0)
        rss["consumer"].append(rss_mib(full.consumer.pid))
        rss["worker"].append(rss_mib(full.worker.pid))
        if "postgresql" in rss:
            members = tree_memory_by_process(run.database_pid() or 0)
            database.append({pid: total - shmem for pid, (total, shmem) in members.items()})
            rss["postgresql"].append(sum(database[-1].values()))
            shared.append(sum(shmem for _, shmem in members.values()))
        progress.update(int(elapsed))
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
    progress.close()
    await asyncio.to_thread(producer.flush, 30)
    await until(lambda: len(run.stub.first_sends("soak-")) >= produced, time.monotonic() + config.drain_seconds)
    run.cpu["soak"] = meter.cores()
    figures: dict[str, Any] = {"seconds": config.soak_seconds, "notifications_per_second": round(routed_rate, 3),
                               "notifications_produced": produced,
                               "notifications_sent": len(run.stub.first_sends("soak-")),
                               "duplicates": run.stub.duplicates("soak-"),
                               "worker_send_attempts": attempts_since(attempts, await full.settled_send_attempts())}
    for name, values in rss.items():
        start, end, growth = growth_ratio(values)
        figures[name] = {"rss_start_mib": round(start, 1), "rss_end_mib": round(end, 1),
                         "rss_max_mib": round(max(values, default=0.0), 1), "growth_ratio": round(growth, 4)}
    if "postgresql" in figures:
        tree = figures["postgresql"]
        lasting = lasting_growth(database)
        figures["postgresql"] = {
            "rss_start_mib": round(lasting.start, 1), "rss_end_mib": round(lasting.end, 1),
            "rss_max_mib": tree["rss_max_mib"], "growth_ratio": round(lasting.growth, 4),
            "measure": ("PSS of the postmaster and its backends that lived through the soak, without the shared "
                        "buffer cache (a fixed-size segment that fills as pages are first read)"),
            "lasting_processes": lasting.lasting, "processes_start": lasting.processes_start,
            "processes_end": lasting.processes_end, "whole_tree_start_mib": tree["rss_start_mib"],
            "whole_tree_end_mib": tree["rss_end_mib"], "whole_tree_growth_ratio": tree["growth_ratio"]}
        figures["postgresql"]["shared_buffers_touched_start_mib"] = round(shared[0], 1) if shared else 0.0
        figures["postgresql"]["shared_buffers_touched_end_mib"] = round(shared[-1], 1) if shared else 0.0
    return figures


async def run_full_path(run: Run) -> tuple[dict[str, Any], CapacityRounds]:
    """Capacity rounds against the raw notification ceiling, then latency at light load and at half capacity,
    hot customer, soak and the database outage, one process pair."""
    config = run.config
    topics = {prefix: run.topic(prefix.rstrip("-")) for prefix in FULL_PATH_PHASES.values()}
    env = run.env(tuple(topics.values()), f"bench-journeys-{uuid.uuid4().hex[:8]}", sendgrid=True)
    full = FullPath(run.process("consume", env, "consumer"), run.process("worker", env, "worker"), topics,
                    env.task_queue)
    try:
        rounds = await measure_capacity_rounds(run, full)
        capacity = rounds.as_json()
        rate = capacity["notifications_per_second"]
        await run.settle("latency light load")
        full.worker.start()
        full.consumer.start()
        await full.worker.wait_ready()
        light_rate = min(config.light_rate_per_second, max(rate / 10, 0.2))
        light = await measure_latency(run, full, light_rate, "lat-light-", "light load")
        half = await measure_latency(run, full, max(rate / 2, 0.2), "lat-half-", "50 % of capacity")
        hot = await measure_hot_customer(run, full)
        soak = await measure_soak(run, full, rate)
        if not full.alive():
            raise RuntimeError(f"an eventflow process exited:\n{full.consumer.log_tail()}\n{full.worker.log_tail()}")
        phases = {"capacity": capacity, "latency_light_load": light, "latency_half_capacity": half,
                  "hot_customer": hot, "soak": soak}
        if run.servers.database is not None:  # last: it restarts the database the other phases share
            phases["database_outage"] = await measure_database_outage(run, full, rate)
        return phases, rounds
    finally:
        await full.consumer.stop()
        await full.worker.stop()


# --- the run -------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {"cores": os.cpu_count(), "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def _ratio(numerator: float | None, denominator: float) -> float | None:
    """``numerator / denominator``; None when either is unknown (an infinite percentile, a zero rate)."""
    if numerator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def _at_least(ratio: float | None, bound: float) -> bool:
    return ratio is not None and ratio >= bound


def _cost_met(full: Mapping[str, Any] | None, raw: Mapping[str, Any] | None) -> bool:
    if not full or not raw or not raw["history_events_per_notification"]:
        return False
    return (full["history_events_per_notification"] <= 1.3 * raw["history_events_per_notification"]
            and full["workflows_per_notification"] <= 1.0)


def targets(results: Mapping[str, Any]) -> dict[str, bool]:
    """Every target of the benchmark, checked as a ratio or an exact count: name -> met."""
    ratios = results["ratios"]
    floor = results["raw"]["start_to_activity_floor_p50_seconds"]
    light = results["latency_light_load"]
    half = results["latency_half_capacity"]
    hot = results["hot_customer"]
    soak = results["soak"]
    cap = hot["daily_cap"]
    duplicates = sum(results["duplicates_by_phase_at_end"].values())
    return {
        "full path >= 0.8 x raw ceiling, every notification sent":
            _at_least(ratios["full_path_vs_raw_ceiling"], 0.8)
            and results["capacity"]["sent"] == results["capacity"]["events"],
        "light-load p50 <= 1.5 x raw start->activity floor":
            light["p50_seconds"] is not None and floor > 0 and light["p50_seconds"] <= 1.5 * floor,
        "p99 <= 500 ms at 50 % of capacity with 100 % delivered":
            half["delivered_fraction"] >= 1.0 and half["p99_seconds"] is not None and half["p99_seconds"] <= 0.5,
        "bridge starts >= 0.9 x raw start ceiling": _at_least(ratios["bridge_vs_raw_start_ceiling"], 0.9),
        "unrouted >= 0.5 x raw consume loop": _at_least(ratios["unrouted_vs_raw_consume"], 0.5),
        f"hot customer: exactly {cap} sent, {hot['journeys'] - cap} capped, 0 errors, 0 duplicates":
            (hot["sent"], hot["capped"], hot["errors"], hot["duplicates"]) == (cap, hot["journeys"] - cap, 0, 0),
        "no duplicate send in any phase": duplicates == 0,
        "history events per notification <= 1.3 x the raw minimum, one workflow per notification":
            _cost_met(results["capacity"].get("temporal_cost"), results["raw"].get("temporal_cost")),
        "consumer RSS flat within 10 % over the soak": abs(soak["consumer"]["growth_ratio"]) <= 0.10,
        "worker RSS flat within 10 % over the soak": abs(soak["worker"]["growth_ratio"]) <= 0.10,
        **_fault_targets(results),
        **_audience_targets(results),
    }


def _audience_targets(results: Mapping[str, Any]) -> dict[str, bool]:
    """The audience phases' targets, for those that ran (each needs the run's customer store)."""
    ratios = results["ratios"]
    met: dict[str, bool] = {}
    if "segments" in results:
        met[f"segments: events/s with {results['segments']['segments']} segments >= 0.8 x without"] = \
            _at_least(ratios.get("segments_vs_no_segments"), 0.8)
    if "broadcast" in results:
        broadcast = results["broadcast"]
        met[f"broadcast to {broadcast['members']} members >= 3 x raw ceiling, each member sent exactly once"] = \
            _at_least(ratios.get("broadcast_vs_raw_ceiling"), 3.0) and broadcast["sent"] == broadcast["members"] \
            and (broadcast["missing"], broadcast["unexpected"], broadcast["duplicates"]) == (0, 0, 0)
    if "segment_entry" in results:
        entry = results["segment_entry"]
        met["segment entry: every profile change entered the segment, once"] = \
            entry["produced"] > 0 and entry["delivered"] == entry["produced"] and entry["entered_more_than_once"] == 0
    return met


def _fault_targets(results: Mapping[str, Any]) -> dict[str, bool]:
    """The targets of the phases a run may leave out (`phases_not_run`): only those that ran are judged."""
    met: dict[str, bool] = {}
    if "postgresql" in results["soak"]:
        met["PostgreSQL memory flat within 10 % over the soak"] = \
            abs(results["soak"]["postgresql"]["growth_ratio"]) <= 0.10
    if "database_outage" in results:
        outage = results["database_outage"]
        met[f"database outage ({outage['down_seconds']:g} s): 0 missing, 0 duplicates"] = \
            outage["produced"] > 0 and (outage["missing"], outage["duplicates"]) == (0, 0)
    if "faults" in results:
        faults = results["faults"]
        met["fault phase (kills, Temporal restart, 503 storm): 0 missing, 0 duplicates"] = \
            faults["produced"] > 0 and (faults["missing"], faults["duplicates"]) == (0, 0)
    return met


def _audience_ratios(audience: Mapping[str, Any], raw_rate: float) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    if "segments" in audience:
        segments = audience["segments"]
        ratios["segments_vs_no_segments"] = _ratio(segments["events_per_second_with_segments"],
                                                   segments["events_per_second_without_segments"])
    if "broadcast" in audience:
        ratios["broadcast_vs_raw_ceiling"] = _ratio(audience["broadcast"]["sends_per_second"], raw_rate)
    return ratios


def _runs_faults(servers: Servers, config: BenchConfig) -> bool:
    return config.faults.events > 0 and servers.database_url is not None


async def run(servers: Servers, config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Runs every phase on ``servers`` and returns the figures (the JSON document)."""
    stub = SendGridStub()
    stub.start()
    bench = Run(servers, config, workdir, stub)
    try:
        bridge = await measure_bridge_rounds(bench)
        await bench.settle("unrouted")
        raw_consume, unrouted = await measure_unrouted(bench)
        full, capacity = await run_full_path(bench)
        floor = capacity.floor
        audience = await run_audience_phases(bench)
        faults = await run_fault_phase(bench) if _runs_faults(servers, config) else None
        # A late retry of an earlier phase's send can reach the stub during a later phase: count again.
        duplicates_at_end = {name: stub.duplicates(prefix) for name, prefix in FULL_PATH_PHASES.items()
                             if name in full}
        if "broadcast" in audience:
            duplicates_at_end["broadcast"] = stub.duplicates_by_key(
                broadcast_key_prefix(audience["broadcast"]["broadcast_id"]))
    finally:
        stub.stop()
    if faults is not None:
        full["faults"] = faults
        duplicates_at_end["faults"] = faults["duplicates"]  # its own stub, read after its drain
    floor_summary = summarize_latency(floor, len(floor), (0.5, 0.99))
    results: dict[str, Any] = {
        "machine": machine(),
        "config": asdict(config),
        "raw": {
            "start_workflow_per_second": round(bridge.ceiling_mean, 2),
            "start_workflow_per_second_readings": [round(value, 2) for value in bridge.ceilings],
            "notifications_per_second": round(capacity.figures.ceiling_mean, 2),
            "notifications_per_second_readings": [round(value, 2) for value in capacity.figures.ceilings],
            "notifications_per_second_middle_90_readings": [round(value, 2) for value in capacity.middle.ceilings],
            "start_to_activity_floor_p50_seconds": round(floor_summary.percentile(0.5), 4) if floor else 0.0,
            "start_to_activity_floor_p99_seconds": round(floor_summary.percentile(0.99), 4) if floor else 0.0,
            "consume_loop_events_per_second": round(raw_consume, 1),
            "temporal_cost": capacity.raw_cost.as_json(),
        },
        "bridge": {"starts_per_second": round(bridge.measured_median, 2),
                   "starts_per_second_by_round": [round(value, 2) for value in bridge.measured],
                   "ratio_by_round": [round(value, 4) for value in bridge.ratios]},
        "unrouted": {"events_per_second": round(unrouted, 1)},
        **full,
        **audience,
        "ratios": {
            "full_path_vs_raw_ceiling": round(capacity.figures.ratio, 4),
            "full_path_vs_raw_ceiling_middle_90": round(capacity.middle.ratio, 4),
            "bridge_vs_raw_start_ceiling": round(bridge.ratio, 4),
            "unrouted_vs_raw_consume": _ratio(unrouted, raw_consume),
            "light_p50_vs_raw_floor": _ratio(full["latency_light_load"]["p50_seconds"],
                                             floor_summary.percentile(0.5) if floor else 0.0),
            **_audience_ratios(audience, capacity.figures.ceiling_mean),
        },
        "duplicates_by_phase_at_end": duplicates_at_end,
        "cpu_cores_used_per_phase": bench.cpu,
        "temporal_server_quiet_after_seconds": bench.settled,
        "workflows_deleted_after_phase": bench.deleted,
        "settings_not_in_this_tree": sorted(bench.dropped_settings),
        "phases_not_run": [name for name in ("database_outage", "faults") if name not in full]
        + [name for name in ("segments", "segment_entry", "broadcast") if name not in audience],
    }
    results["targets_met"] = targets(results)
    return results


