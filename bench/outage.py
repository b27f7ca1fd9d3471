"""The database-outage phase: the run's PostgreSQL stopped in the middle of a stream of notifications.

It runs on the full path's consumer and worker, after the soak. Events are produced at a steady rate
for ``lead + down + lead`` seconds; after the first lead the run's PostgreSQL server gets a fast
shutdown (every connection dropped), and ``down_seconds`` later it starts again on the same data.
Sends are counted at the stub: every produced order must be sent, and sent once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import FullPath, Run, attempts_since, kafka_producer, produce_record, purchase_event, until
from bench.progress import Progress, phase
from events.producer import encode_event
from events.schemas import load as load_schemas

#: Order-id prefix of the phase's events.
PREFIX = "outage-"


async def measure_database_outage(run: Run, full: FullPath, capacity: float) -> dict[str, Any]:
    """Stops and restarts ``run.servers.database`` while events stream in; counts the sends at the stub."""
    database = run.servers.database
    if database is None:
        raise ValueError("the database-outage phase needs the run's own PostgreSQL server")
    config = run.config.outage
    rate = min(config.rate_per_second, max(capacity / 4, 0.2))
    total = max(1, round(rate * (2 * config.lead_seconds + config.down_seconds)))
    phase(f"database outage: {total} events at {rate:.2f}/s, PostgreSQL stopped for {config.down_seconds:g}s "
          f"after {config.lead_seconds:g}s")
    schemas = load_schemas()
    producer = kafka_producer(run.servers.kafka, batch=False)
    produced: list[str] = []
    meter = run.meter(full.consumer, full.worker)
    attempts = await full.send_attempts()
    retries_before = await full.consumer.counter("eventflow_retries_total")
    moments: dict[str, float] = {}

    async def stream() -> None:
        progress = Progress("database outage", total)
        started = time.monotonic()
        for index in range(total):
            event = purchase_event(PREFIX)
            produced.append(str(event["payload"]["order_id"]))
            produce_record(producer, full.topics[PREFIX], str(event["customer"]["id"]).encode(),
                           encode_event(event, schemas))
            producer.poll(0)
            progress.update(index + 1)
            delay = started + (index + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        progress.close()
        await asyncio.to_thread(producer.flush, 30)

    async def outage() -> None:
        await asyncio.sleep(config.lead_seconds)
        meter.sample()  # the postmaster's last reading before it goes
        moments["stopped_at"] = time.time()
        await asyncio.to_thread(database.stop, keep_data=True)
        await asyncio.sleep(max(0.0, moments["stopped_at"] + config.down_seconds - time.time()))
        await asyncio.to_thread(database.start, keep_data=True)
        moments["restarted_at"] = time.time()  # accepting connections again

    await asyncio.gather(stream(), outage())
    await until(lambda: len(run.stub.first_sends(PREFIX)) >= len(produced),
                time.monotonic() + config.drain_seconds)
    run.cpu["database outage"] = meter.cores()
    first = run.stub.first_sends(PREFIX)
    sent_at = [request.at_epoch_seconds for request in first.values()]
    missing = len(set(produced) - set(first))
    return {
        "down_seconds": config.down_seconds, "rate_per_second": round(rate, 3), "produced": len(produced),
        "sent": len(first), "missing": missing, "duplicates": run.stub.duplicates(PREFIX),
        "delivered_fraction": round((len(produced) - missing) / len(produced), 4) if produced else 0.0,
        "sent_while_down": sum(moments["stopped_at"] <= at < moments["restarted_at"] for at in sent_at),
        "restart_to_last_send_seconds": round(max(sent_at) - moments["restarted_at"], 3) if sent_at else None,
        "consumer_retries": int(await full.consumer.counter("eventflow_retries_total") - retries_before),
        "processes_alive": full.alive(),
        "worker_send_attempts": attempts_since(attempts, await full.settled_send_attempts()),
    }
