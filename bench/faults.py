"""The fault phase: an operator's bad day, counted at the provider (issue "Nothing lost under faults").

Two ``eventflow consume`` and two ``eventflow worker`` processes and one ``eventflow webhooks``
run against a Temporal dev server of the phase's own (persistent, so a killed server starts again
on the same state), the run's Kafka broker and PostgreSQL. Email goes through the SendGrid channel
to a SendGrid-speaking stub that answers in 20-80 ms and posts a signed ``processed`` event for each
accepted send to ``eventflow webhooks`` (the workers are told SendGrid reports:
``EVENTFLOW_PROVIDERS_REPORTING``), so a send whose answer died with its worker is settled by the
provider's report, not guessed.

While events arrive at a steady rate on the phase's topic, one fault after another (`FaultConfig`):
SIGKILL of a worker, of a consumer and of the Temporal server, each started again after a while,
then a provider outage (every send answered 503) with a SIGKILL of the other worker in it. The
figures: missing and duplicate sends at the stub, uncertain sends by how they were resolved
(``eventflow_send_uncertain_total``, scraped from every worker process before it is killed and at
the end), the ledger's final states, dead letters, and the time from the end of the last fault to
the last send.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from confluent_kafka import Consumer, TopicPartition

from bench.common import Run, kafka_producer, produce_record, purchase_event
from bench.config import FaultConfig
from bench.processes import EventflowEnv, EventflowProcess, free_port
from bench.progress import Progress, phase
from bench.stub import EventWebhookPoster, SendGridStub
from consumer.topics import ensure_topics
from devstack.stack import SEARCH_ATTRIBUTES
from devstack.temporal import TemporalDevServer
from events.producer import encode_event
from events.schemas import load as load_schemas

#: Order-id prefix of the phase's events.
PREFIX = "fault-"
#: Ledger states in which a send is settled: nothing more will happen to it.
SETTLED_STATES = frozenset({"delivered", "failed"})


class FaultKind(StrEnum):
    """What one fault of the phase does."""

    KILL = "kill -9"
    PROVIDER_OUTAGE = "provider answers 503"


@dataclass(frozen=True)
class FaultRecord:
    """One fault as it happened, in seconds since the phase's first event.

    Attributes:
        kind: what was done.
        target: the process (or ``sendgrid`` for the outage).
        started_seconds: when it was killed, or the outage began.
        ended_seconds: when it was started again (and, for Temporal, healthy), or the outage ended.
    """

    kind: FaultKind
    target: str
    started_seconds: float
    ended_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"fault": str(self.kind), "target": self.target, "started_seconds": round(self.started_seconds, 2),
                "ended_seconds": round(self.ended_seconds, 2)}


class MetricTally:
    """Counter samples of processes that get killed: the last scrape of each process incarnation (pid).

    A killed process's counters die with it, so each worker is scraped every second and just
    before it is killed; the phase's total is the sum over incarnations.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._last: dict[tuple[str, int], dict[str, Counter[str]]] = {}

    async def scrape(self, process: EventflowProcess) -> None:
        pid = process.running_pid()
        if pid is None:
            return
        samples = await process.metrics()
        if not samples:
            return  # not serving yet (just restarted), or already gone
        by_metric: dict[str, Counter[str]] = {name: Counter() for name in self._names}
        for name, labels, value in samples:
            if name in by_metric:
                by_metric[name][labels.get("resolution") or labels.get("outcome") or ""] += int(value)
        self._last[(process.name, pid)] = by_metric

    def total(self, name: str) -> dict[str, int]:
        summed: Counter[str] = Counter()
        for by_metric in self._last.values():
            summed.update(by_metric.get(name, Counter()))
        return {label: n for label, n in sorted(summed.items()) if n}


UNCERTAIN_METRIC = "eventflow_send_uncertain_total"
ATTEMPTS_METRIC = "eventflow_notifications_sent_total"


def summarize(*, config: FaultConfig, produced: Sequence[str], first_sends: Mapping[str, float], duplicates: int,
              refused: int, faults: Sequence[FaultRecord], uncertain: Mapping[str, int],
              attempts: Mapping[str, int], ledger_states: Mapping[str, int], dead_letters: int,
              processes_alive: Mapping[str, bool], drained: bool) -> dict[str, Any]:
    """The fault phase's figures (its JSON object), from what was produced, seen at the stub and scraped.

    Args:
        produced: the order id of every produced event.
        first_sends: order id -> wall-clock time of its first accepted send at the stub.
        faults: the faults as they happened.
        drained: whether every send was seen and settled before the drain deadline.
    """
    missing = len(set(produced) - set(first_sends))
    last_fault_end = max((f.ended_seconds for f in faults), default=None)
    return {
        "events": config.events, "rate_per_second": config.rate_per_second, "partitions": config.partitions,
        "produced": len(produced), "sent": len(first_sends), "missing": missing, "duplicates": duplicates,
        "refused_by_provider_outage": refused,
        "uncertain_by_resolution": dict(uncertain), "uncertain_total": sum(uncertain.values()),
        "ledger_states": dict(ledger_states),
        "ledger_unsettled": sum(n for state, n in ledger_states.items() if state not in SETTLED_STATES),
        "dead_letters": dead_letters,
        "faults": [f.as_json() for f in faults],
        "last_fault_ended_seconds": None if last_fault_end is None else round(last_fault_end, 2),
        "worker_send_attempts": dict(attempts),
        "processes_alive_at_end": dict(processes_alive),
        "drained_before_deadline": drained,
    }


def last_send_after_last_fault(figures: Mapping[str, Any], first_send_seconds: Sequence[float]) -> float | None:
    """Seconds from the end of the last fault to the last first send (both since the phase's first event)."""
    if figures["last_fault_ended_seconds"] is None or not first_send_seconds:
        return None
    return round(max(first_send_seconds) - figures["last_fault_ended_seconds"], 2)


# --- running it ------------------------------------------------------------------------------------

def _records_in(kafka: Mapping[str, str], topic: str) -> int:
    """Records ever written to ``topic`` (a fresh topic: the sum of its partitions' high watermarks)."""
    consumer = Consumer({**kafka, "group.id": f"bench-count-{uuid.uuid4().hex[:8]}", "log_level": 4})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in metadata.partitions)
    finally:
        consumer.close()


async def _ledger_states(database_url: str) -> dict[str, int]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch("SELECT state, count(*) AS n FROM eventflow.sends"
                                      " WHERE idempotency_key LIKE $1 GROUP BY state", f"%{PREFIX}%")
    finally:
        await connection.close()
    return {str(row["state"]): int(row["n"]) for row in rows}


@dataclass
class _Cast:
    """The phase's servers of its own and its Eventflow processes."""

    temporal: TemporalDevServer
    stub: SendGridStub
    topic: str
    webhooks: EventflowProcess
    consumers: tuple[EventflowProcess, EventflowProcess]
    workers: tuple[EventflowProcess, EventflowProcess]

    @property
    def processes(self) -> tuple[EventflowProcess, ...]:
        return (self.webhooks, *self.consumers, *self.workers)


async def run_fault_phase(run: Run) -> dict[str, Any]:
    """Runs the fault phase on the run's Kafka and PostgreSQL and a Temporal server of its own."""
    config = run.config.faults
    if run.servers.database_url is None:
        raise ValueError("the fault phase needs the customer store (the run's PostgreSQL)")
    phase(f"faults: {config.events} events at {config.rate_per_second:g}/s on {config.partitions} partitions, "
          "2 consumers, 2 workers, webhooks; kills, a Temporal restart and a 503 storm")
    temporal = TemporalDevServer(run.workdir / f"temporal-faults-{uuid.uuid4().hex[:6]}", port=free_port(),
                                 ui_port=None, search_attributes=SEARCH_ATTRIBUTES, persistent=True)
    await asyncio.to_thread(temporal.start)
    poster = EventWebhookPoster()
    stub = SendGridStub(latency_seconds=config.provider_latency_seconds, events=poster)
    stub.start()
    try:
        cast = _cast(run, config, temporal, stub, poster)
        return await _run(run, config, cast)
    finally:
        stub.stop()
        await asyncio.to_thread(temporal.stop)


def _cast(run: Run, config: FaultConfig, temporal: TemporalDevServer, stub: SendGridStub,
          poster: EventWebhookPoster) -> _Cast:
    topic = run.topic("faults", partitions=config.partitions)
    feedback_topic = f"{topic}.feedback"
    ensure_topics(run.servers.kafka, [feedback_topic], partitions=1)
    webhooks_port = free_port()
    poster.start(f"http://127.0.0.1:{webhooks_port}/sendgrid/events")
    env = EventflowEnv(
        run.servers.kafka["bootstrap.servers"], temporal.address, (topic,), f"bench-{uuid.uuid4().hex[:8]}",
        f"bench-faults-{uuid.uuid4().hex[:8]}", run.workdir, stub.base_url, run.config.concurrency,
        database_url=run.servers.database_url,
        extra={"EVENTFLOW_PROVIDERS_REPORTING": "sendgrid",
               "EVENTFLOW_SEND_REPORT_WINDOW_SECONDS": f"{config.report_window_seconds:g}",
               "SENDGRID_WEBHOOK_VERIFICATION_KEY": poster.verification_key,
               "EVENTFLOW_WEBHOOKS_PORT": str(webhooks_port),
               "EVENTFLOW_FEEDBACK_TOPIC": feedback_topic,
               "EVENTFLOW_FEEDBACK_CONSUMER_GROUP": f"{topic}-feedback"})
    return _Cast(temporal, stub, topic, run.process("webhooks", env, "webhooks"),
                 (run.process("consume", env, "consumer-1"), run.process("consume", env, "consumer-2")),
                 (run.process("worker", env, "worker-1"), run.process("worker", env, "worker-2")))


async def _run(run: Run, config: FaultConfig, cast: _Cast) -> dict[str, Any]:
    for process in cast.processes:
        process.start()
    try:
        for process in cast.processes:
            await process.wait_ready()
        meter = run.meter(*cast.processes, **{"temporal server (faults)": lambda: cast.temporal.pid})
        tally = MetricTally((UNCERTAIN_METRIC, ATTEMPTS_METRIC))
        produced: list[str] = []
        faults: list[FaultRecord] = []
        started = time.time()
        producing = asyncio.create_task(_produce(run, config, cast, produced))
        sampling = asyncio.create_task(_sample(meter.sample, tally, cast.workers))
        try:
            await _inflict(config, cast, started, faults, meter.sample, tally)
            await producing
            drained = await _drain(run, config, cast, produced)
        finally:
            sampling.cancel()
            producing.cancel()
        for worker in cast.workers:
            await tally.scrape(worker)
        run.cpu["faults"] = meter.cores()
        first = cast.stub.first_sends(PREFIX)
        figures = summarize(
            config=config, produced=produced, first_sends={o: r.at_epoch_seconds for o, r in first.items()},
            duplicates=cast.stub.duplicates(PREFIX), refused=cast.stub.refused(PREFIX), faults=faults,
            uncertain=tally.total(UNCERTAIN_METRIC), attempts=tally.total(ATTEMPTS_METRIC),
            ledger_states=await _ledger_states(str(run.servers.database_url)),
            dead_letters=await asyncio.to_thread(_records_in, run.servers.kafka, f"{cast.topic}.dlq"),
            processes_alive={p.name: p.alive() for p in cast.processes}, drained=drained)
        figures["last_fault_to_last_send_seconds"] = last_send_after_last_fault(
            figures, [r.at_epoch_seconds - started for r in first.values()])
        figures["webhook_events_posted"] = cast.stub.events.posted_events if cast.stub.events else 0
        return figures
    finally:
        for process in cast.processes:
            await process.stop()


async def _produce(run: Run, config: FaultConfig, cast: _Cast, produced: list[str]) -> None:
    schemas = load_schemas()
    producer = kafka_producer(run.servers.kafka, batch=False)
    topic = cast.topic
    progress = Progress("faults", config.events)
    begin = time.monotonic()
    for index in range(config.events):
        event = purchase_event(PREFIX)
        produced.append(str(event["payload"]["order_id"]))
        produce_record(producer, topic, str(event["customer"]["id"]).encode(), encode_event(event, schemas))
        producer.poll(0)
        progress.update(index + 1)
        delay = begin + (index + 1) / config.rate_per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    progress.close()
    await asyncio.to_thread(producer.flush, 30)


async def _sample(sample_cpu: Callable[[], None], tally: MetricTally,
                  workers: Sequence[EventflowProcess]) -> None:
    while True:
        sample_cpu()
        for worker in workers:
            await tally.scrape(worker)
        await asyncio.sleep(1.0)


async def _inflict(config: FaultConfig, cast: _Cast, started: float, faults: list[FaultRecord],
                   sample_cpu: Callable[[], None], tally: MetricTally) -> None:
    """The faults, one after another, each recorded as it happened."""

    def now() -> float:
        return time.time() - started

    async def kill_and_restart(process: EventflowProcess) -> None:
        sample_cpu()
        await tally.scrape(process)
        at = now()
        phase(f"faults: kill -9 {process.name}")
        await asyncio.to_thread(process.kill)
        await asyncio.sleep(config.process_down_seconds)
        process.start()
        faults.append(FaultRecord(FaultKind.KILL, process.name, at, now()))

    async def kill_temporal() -> None:
        pid = cast.temporal.pid
        if pid is None:
            raise RuntimeError("the fault phase's Temporal server is not running")
        sample_cpu()
        at = now()
        phase("faults: kill -9 the Temporal server")
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(config.temporal_down_seconds)
        await asyncio.to_thread(cast.temporal.start)  # on the same SQLite file; returns once healthy
        faults.append(FaultRecord(FaultKind.KILL, "temporal server", at, now()))

    async def provider_outage(during: Awaitable[None]) -> None:
        at = now()
        phase(f"faults: SendGrid answers 503 for {config.storm_seconds:g}s")
        cast.stub.unavailable(True)
        try:
            await asyncio.gather(during, asyncio.sleep(config.storm_seconds))
        finally:
            cast.stub.unavailable(False)
        faults.append(FaultRecord(FaultKind.PROVIDER_OUTAGE, "sendgrid", at, now()))

    async def later(seconds: float, step: Awaitable[None]) -> None:
        await asyncio.sleep(seconds)
        await step

    await asyncio.sleep(config.first_fault_seconds)
    await kill_and_restart(cast.workers[0])
    await asyncio.sleep(config.gap_seconds)
    await kill_and_restart(cast.consumers[0])
    await asyncio.sleep(config.gap_seconds)
    await kill_temporal()
    await asyncio.sleep(config.gap_seconds)
    await provider_outage(later(config.storm_kill_after_seconds, kill_and_restart(cast.workers[1])))


async def _drain(run: Run, config: FaultConfig, cast: _Cast, produced: Sequence[str]) -> bool:
    """Waits until every produced order was sent and every one of the phase's sends is settled in the ledger."""
    database_url = str(run.servers.database_url)
    deadline = time.monotonic() + config.drain_seconds
    progress = Progress("faults: drain", len(produced))
    try:
        while time.monotonic() < deadline:
            sent = len(cast.stub.first_sends(PREFIX))
            progress.update(sent)
            if sent >= len(produced):
                states = await _ledger_states(database_url)
                if sum(states.values()) >= len(produced) and set(states) <= SETTLED_STATES:
                    return True
            await asyncio.sleep(1.0)
        return False
    finally:
        progress.close()
