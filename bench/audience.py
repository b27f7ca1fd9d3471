"""The audience phases: what segments cost the consumer, a broadcast's throughput, profile change -> entry.

* **Segment cost.** The same mix of events (per customer: a ``ProfileUpdated``, an email opt-in, two
  purchases, each purchase starting ``bench_thank_you`` on a queue no worker polls, as in the bridge
  phase) is read by ``eventflow consume`` twice, on two topics of fresh customers: first with no
  segment defined, then with the five of ``bench/audiences/`` (a profile field, consent, an event
  count in a window, the last event's payload, recency). Events/s of the second over the first is
  the price of keeping membership current.
* **Segment entry.** On the second consumer, still running, ``ProfileUpdated`` events set the locale
  of customers it already knows to ``fr`` at a steady rate; each makes its customer enter
  ``bench_french_locale``. The time from just before the produce to the entry's ``segment_changes.at``
  (the database clock of the same host; ``now()`` of the transaction that evaluated the change) is
  taken over every produced update (one never entered counts as slower than all).
* **Broadcast.** A segment of ``broadcast_members`` customers with an email, written straight into
  the store and evaluated by `store.segments.SegmentStore`; the real ``Broadcast`` workflow and its
  activities in an ``eventflow worker`` process send one email to each, at a pace far above what the
  run can reach. Sends are counted at the provider stub by idempotency key and by address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import Run, encode_events, kafka_producer, preload, produce_record, rate_of
from bench.history import history_cost
from bench.processes import BENCH_JOURNEYS, EventflowProcess
from bench.progress import Progress, phase
from bench.stats import rate_per_second, summarize_latency
from events import samples
from events.producer import encode_event
from events.schemas import load as load_schemas
from journeys.segments import AUDIENCES, Compare, Comparison, ProfileField, Segment
from store import CustomerStore, FieldCipher, create_pool
from store.broadcasts import Broadcast, BroadcastMessage, BroadcastStore
from store.customers import ProfileWrite
from store.segments import SegmentStore
from workflows.broadcast import BROADCAST_WORKFLOW, BroadcastInput, broadcast_workflow_id
from workflows.profile import ProfileUpdate

#: The five segments of the segment-cost phase (copied beside the bench journeys for its second consumer).
SEGMENTS_DIR = Path(__file__).resolve().parent / "audiences"
#: The segment a profile update to locale ``fr`` makes a customer enter.
ENTRY_SEGMENT = "bench_french_locale"
ENTRY_LOCALE = "fr"
#: Events per customer in the segment-cost phase: a profile update, an opt-in and two purchases.
EVENTS_PER_CUSTOMER = 4
BROADCAST_MESSAGE = BroadcastMessage("email", "bench_broadcast", "en", {
    "en": {"subject": "bench broadcast {{ broadcast.id }}", "body": "Hi {{ customer.first_name or 'there' }}, news."}})
#: Customers written to the store per statement while the broadcast's audience is built.
_CHUNK = 1000


def broadcast_key_prefix(broadcast_id: str) -> str:
    """The idempotency keys of a broadcast's sends (``broadcast:<id>:<customer>``) start with this."""
    return f"broadcast:{broadcast_id}:"


def _customer_events(customer: dict[str, Any]) -> list[dict[str, Any]]:
    """One customer's events in the segment-cost mix, in order (one key, so one partition, in order)."""
    return [samples.event("ProfileUpdated", customer, {"changed_fields": ["locale"]}),
            samples.event("SubscriptionChanged", customer, {"channel": "EMAIL", "subscribed": True,
                                                            "source": "bench"}),
            samples.purchase(customer, order_id=f"seg-{uuid.uuid4().hex[:12]}", amount="49.90"),
            samples.purchase(customer, order_id=f"seg-{uuid.uuid4().hex[:12]}", amount="19.90")]


def journeys_with_segments(workdir: Path) -> Path:
    """The bench journeys plus ``audiences/`` with the five segments, as a journeys folder of its own."""
    target = workdir / "journeys-with-segments"
    shutil.copytree(BENCH_JOURNEYS, target, dirs_exist_ok=True)
    shutil.copytree(SEGMENTS_DIR, target / AUDIENCES, dirs_exist_ok=True)
    return target


@dataclasses.dataclass(frozen=True)
class _Consumed:
    """One half of the segment-cost phase: its rate, its (still running) consumer, topic and customers."""

    events_per_second: float
    consumer: EventflowProcess
    topic: str
    customers: list[str]
    task_queue: str

    async def stop(self, run: Run) -> None:
        """Stops the consumer and deletes the journeys it started (no worker takes them)."""
        await run.stop_and_delete(self.consumer, self.task_queue)


async def _consume_rate(run: Run, label: str, journeys: Path | None) -> _Consumed:
    """Preloads the mix for fresh customers and measures ``eventflow consume`` reading it; the consumer is left running."""
    config = run.config
    customers = [samples.customer() for _ in range(max(1, config.audiences.segment_events // EVENTS_PER_CUSTOMER))]
    events = [event for customer in customers for event in _customer_events(customer)]
    topic = run.topic(f"segments-{'with' if journeys else 'without'}")
    preload(run.servers.kafka, topic, encode_events(events), len(events), label)
    task_queue = f"bench-no-worker-{uuid.uuid4().hex[:8]}"
    env = run.env((topic,), task_queue, sendgrid=False)
    if journeys is not None:
        env = dataclasses.replace(env, extra={"EVENTFLOW_JOURNEYS_DIR": str(journeys)})
    consumer = run.process("consume", env, "consumer")
    consumer.start()
    try:
        meter = run.meter(consumer)
        measured = await rate_of(lambda: consumer.counter("eventflow_events_consumed_total"), len(events), label,
                                 config.phase_timeout_seconds, consumer.alive)
        run.cpu[label] = meter.cores()
    except (RuntimeError, TimeoutError) as exc:
        await consumer.stop()
        raise RuntimeError(f"{exc}\n--- consumer log:\n{consumer.log_tail()}") from exc
    except BaseException:
        await consumer.stop()
        raise
    return _Consumed(measured, consumer, topic, [str(c["id"]) for c in customers], task_queue)


async def _members(pool: asyncpg.Pool, customers: list[str]) -> dict[str, int]:
    rows = await pool.fetch("SELECT segment_id, count(*) AS n FROM eventflow.segment_members"
                            " WHERE customer_id = ANY($1::text[]) GROUP BY segment_id ORDER BY segment_id", customers)
    return {row["segment_id"]: int(row["n"]) for row in rows}


WITHOUT_BEFORE = "segments: none defined"
WITH_SEGMENTS = "segments: 5 defined"
WITHOUT_AFTER = "segments: none defined (after)"


async def measure_segments(run: Run, pool: asyncpg.Pool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The segment-cost phase, then the segment-entry phase on its second consumer."""
    config = run.config.audiences
    total = max(1, config.segment_events // EVENTS_PER_CUSTOMER) * EVENTS_PER_CUSTOMER
    phase(f"segments: {total} events through eventflow consume without segments, with 5 segments, without again")
    # The half with segments between two without, compared with their mean: each half leaves a server
    # that reads a little slower, so a half measured second would be charged for running second.
    await run.settle(WITHOUT_BEFORE)
    before = await _consume_rate(run, WITHOUT_BEFORE, None)
    await before.stop(run)
    await run.settle(WITH_SEGMENTS)
    with_segments = await _consume_rate(run, WITH_SEGMENTS, journeys_with_segments(run.workdir))
    try:
        # Membership is committed with the events' batch, before their offsets: it is all there now.
        members = await _members(pool, with_segments.customers)
        entry = await measure_segment_entry(run, pool, with_segments)
    finally:
        await with_segments.stop(run)
    await run.settle(WITHOUT_AFTER)
    after = await _consume_rate(run, WITHOUT_AFTER, None)
    await after.stop(run)
    cost = {"events": total, "customers": len(with_segments.customers),
            "segments": len(list(SEGMENTS_DIR.glob("*.yaml"))),
            "events_per_second_without_segments": round((before.events_per_second + after.events_per_second) / 2, 1),
            "events_per_second_without_segments_before": round(before.events_per_second, 1),
            "events_per_second_without_segments_after": round(after.events_per_second, 1),
            "events_per_second_with_segments": round(with_segments.events_per_second, 1),
            "members_after": members}
    return cost, entry


async def measure_segment_entry(run: Run, pool: asyncpg.Pool, consumed: _Consumed) -> dict[str, Any]:
    """Profile updates (locale -> fr) at a steady rate; produce -> the entry's ``segment_changes.at``."""
    config = run.config.audiences
    total = config.entry_events
    rate = config.entry_rate_per_second
    phase(f"segment entry: {total} profile updates at {rate:g}/s, each entering {ENTRY_SEGMENT}")
    # Customers the consumer already knows (their locale is de), then fresh ones if the phase wants more.
    known, consumer = consumed.customers, consumed.consumer
    customers = (known + [samples.customer()["id"] for _ in range(max(0, total - len(known)))])[:total]
    schemas = load_schemas()
    producer = kafka_producer(run.servers.kafka, batch=False)
    topic = consumed.topic
    produced_at: dict[str, float] = {}
    meter = run.meter(consumer)
    progress = Progress("segment entry", total)
    started = time.monotonic()
    for index, customer_id in enumerate(customers):
        event = samples.event("ProfileUpdated", samples.customer(customer_id, locale=ENTRY_LOCALE),
                              {"changed_fields": ["locale"]})
        value = encode_event(event, schemas)
        produced_at[customer_id] = time.time()
        produce_record(producer, topic, customer_id.encode(), value)
        producer.poll(0)
        progress.update(index + 1)
        delay = started + (index + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    progress.close()
    await asyncio.to_thread(producer.flush, 30)
    entered: dict[str, list[datetime]] = {}

    async def read() -> bool:
        rows = await pool.fetch("SELECT customer_id, at FROM eventflow.segment_changes WHERE segment_id = $1"
                                " AND change = 'entered' AND customer_id = ANY($2::text[])", ENTRY_SEGMENT, customers)
        entered.clear()
        for row in rows:
            entered.setdefault(row["customer_id"], []).append(row["at"])
        return len(entered) >= total

    deadline = time.monotonic() + config.drain_seconds
    while not await read() and time.monotonic() < deadline and consumer.alive():
        await asyncio.sleep(0.2)
    run.cpu["segment entry"] = meter.cores()
    latencies = [min(at).timestamp() - produced_at[customer] for customer, at in entered.items()]
    summary = summarize_latency(latencies, total)
    return {"rate_per_second": rate, "segment": ENTRY_SEGMENT, **summary.as_json(),
            "entered_more_than_once": sum(1 for at in entered.values() if len(at) > 1)}


async def _audience(pool: asyncpg.Pool, members: int, tag: str) -> Segment:
    """``members`` customers with an email and ``attributes.bench_audience == tag``, and their segment's
    membership, evaluated by the store (the broadcast fixes its audience from it)."""
    segment = Segment(f"bench_broadcast_{tag}", 1, "the broadcast phase's audience (benchmark only)",
                      ProfileField("attributes.bench_audience", Compare(Comparison.EQUALS, (tag,))))
    customers = CustomerStore(pool, FieldCipher(None))
    segments = SegmentStore(pool, [segment])
    ids = [f"bc-{tag}-{n:06d}" for n in range(members)]
    now = samples.now_iso()
    progress = Progress("broadcast audience", members)
    for start in range(0, members, _CHUNK):
        chunk = ids[start:start + _CHUNK]
        await customers.apply_profile_updates([ProfileWrite(c, ProfileUpdate(
            uuid.uuid4().hex, now, email=f"{c}@bench.example", first_name="Kim", timezone="UTC",
            attributes={"bench_audience": tag})) for c in chunk])
        await segments.observe([], chunk)
        progress.update(start + len(chunk))
    progress.close()
    return segment


async def measure_broadcast(run: Run, pool: asyncpg.Pool) -> dict[str, Any]:
    """One broadcast to a ``broadcast_members`` segment through the real workflow and activities."""
    config = run.config.audiences
    members = config.broadcast_members
    phase(f"broadcast: {members} members, batches of {config.broadcast_batch_size}, "
          f"paced at {config.broadcast_rate_per_second:g}/s")
    tag = uuid.uuid4().hex[:8]
    segment = await _audience(pool, members, tag)
    env = run.env((f"bench-broadcast-{tag}",), f"bench-broadcast-{tag}", sendgrid=True)
    worker = run.process("worker", env, "broadcast worker")
    worker.start()
    try:
        await worker.wait_ready()
        broadcast_id = f"bench-{tag}"
        prefix = broadcast_key_prefix(broadcast_id)
        meter = run.meter(worker)
        await BroadcastStore(pool).create(Broadcast(broadcast_id, segment.id, BROADCAST_MESSAGE, datetime.now(UTC),
                                                    config.broadcast_rate_per_second))
        created = time.time()
        handle = await run.servers.client.start_workflow(
            BROADCAST_WORKFLOW, BroadcastInput(broadcast_id, config.broadcast_rate_per_second,
                                               config.broadcast_batch_size),
            id=broadcast_workflow_id(broadcast_id), task_queue=env.task_queue)
        progress = Progress("broadcast", members)
        deadline = time.monotonic() + run.config.phase_timeout_seconds
        while (sent := len(run.stub.first_sends_by_key(prefix))) < members and time.monotonic() < deadline \
                and worker.alive():
            progress.update(sent)
            await asyncio.sleep(0.2)
        progress.update(sent)
        progress.close()
        try:
            outcome = await asyncio.wait_for(handle.result(), timeout=max(5.0, deadline - time.monotonic()))
            state = str(outcome["state"] if isinstance(outcome, dict) else getattr(outcome, "state", outcome))
        except TimeoutError:
            state = "not finished"
        run.cpu["broadcast"] = meter.cores()
        first = run.stub.first_sends_by_key(prefix)
        at = [request.at_epoch_seconds for request in first.values()]
        expected = {f"{prefix}{customer}" for customer in (f"bc-{tag}-{n:06d}" for n in range(members))}
        recorded = await BroadcastStore(pool).progress(broadcast_id)
        cost = await history_cost(run.servers.client, env.task_queue, members)
        return {
            "broadcast_id": broadcast_id, "members": members, "batch_size": config.broadcast_batch_size,
            "rate_per_second": config.broadcast_rate_per_second, "workflow_state": state,
            "planned": recorded.planned, "sent": len(first), "missing": len(expected - set(first)),
            "unexpected": len(set(first) - expected), "duplicates": run.stub.duplicates_by_key(prefix),
            "skipped": dict(Counter(recorded.skipped)),
            "sends_per_second": round(rate_per_second(at), 2),
            "start_to_last_send_seconds": round(max(at) - created, 3) if at else None,
            "temporal_cost": cost.as_json(),
            "worker_alive": worker.alive(),
        }
    finally:
        await worker.stop()


async def run_audience_phases(run: Run) -> dict[str, Any]:
    """The phases this run's sizes ask for (each needs the run's customer store): name -> figures."""
    config = run.config.audiences
    url = run.servers.database_url
    if url is None:
        return {}
    pool = await create_pool(url, min_size=1, max_size=4, statement_timeout_seconds=60.0,
                             command_timeout_seconds=61.0)
    figures: dict[str, Any] = {}
    try:
        if config.segment_events > 0:
            figures["segments"], figures["segment_entry"] = await measure_segments(run, pool)
        if config.broadcast_members > 0:
            figures["broadcast"] = await measure_broadcast(run, pool)
    finally:
        await pool.close()
    return figures

