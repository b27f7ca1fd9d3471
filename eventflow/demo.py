"""``eventflow dev run``: the embedded default end to end, for a newcomer's first five minutes.

Starts the local stack, runs a worker and a consumer in this process, publishes the sample
events and prints the notifications the journeys sent. Kafka and Temporal keep running afterwards
so the Temporal UI can be explored; ``eventflow dev down`` stops them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from activities.config import outbox_path
from activities.outbox import read_outbox
from consumer.topics import ensure_topics
from core.errors import ConfigError
from core.logs import mask_contact_details
from core.settings import OpsSettings
from devstack import Stack
from eventflow.consume import run_consumer
from eventflow.settings import load_settings, worker_settings_from
from eventflow.worker import run_worker
from events.producer import EventProducer
from events.samples import demo_events
from events.schemas import load as load_schemas
from store import migrate


def _say(text: str) -> None:
    print(text, flush=True)


def _show(message: dict[str, object]) -> None:
    to = mask_contact_details(str(message["to"]))
    _say(f"  [{message['channel']}] to {to}  ({message['template_id']}, {message['locale']})")
    if message.get("subject"):
        _say(f"    subject: {message['subject']}")
    for line in str(message["body"]).splitlines():
        _say(f"    | {line}")


async def _wait_for_sends(outbox: Path, marks: set[str], expected: int, timeout_seconds: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        sent = [m for m in read_outbox(outbox) if any(mark in str(m["workflow_id"]) for mark in marks)]
        if len(sent) >= expected or time.monotonic() > deadline:
            return sent
        await asyncio.sleep(0.3)


async def _run(stack: Stack) -> int:
    settings = load_settings()
    if not OpsSettings.load().model_fields_set & {"metrics_port"}:
        settings = replace(settings, metrics_port=0)  # the demo serves no ops endpoints unless asked to
    ensure_topics(settings.kafka.client_config(), [*settings.kafka.topics, settings.kafka.dlq_topic])
    stop = asyncio.Event()
    worker = worker_settings_from(settings)
    # The demo sends into the outbox by design: development mode lets it serve the journeys' channels.
    worker = replace(worker, channels=worker.channels.model_copy(update={"dev_mode": True}))
    database = worker.database.dsn()
    if database is not None:
        revision = await migrate(database)
        _say(f"-> customer store at schema {revision}")
    services = [asyncio.create_task(run_worker(worker, stop), name="worker"),
                asyncio.create_task(run_consumer(settings, stop, database=worker.database,
                                                addresses=worker.addresses, channels=worker.channels),
                                   name="consumer")]
    events = demo_events()
    producer = EventProducer(settings.kafka.client_config(), settings.kafka.topics[0], load_schemas())
    for event in events:
        producer.send(event)
    await producer.flush_async()
    _say(f"-> published {len(events)} sample events to '{settings.kafka.topics[0]}' "
         f"({', '.join(e['event_type'] for e in events)})")
    # Sends happen now for purchases (thank-you) and sign-ups (welcome); the cart reminder waits an hour.
    marks = {str(e["payload"]["order_id"]) for e in events if e["event_type"] == "PurchaseCompleted"}
    marks |= {f"welcome_series:{e['customer']['id']}" for e in events if e["event_type"] == "UserSignedUp"}
    sent = await _wait_for_sends(outbox_path(), marks, expected=len(marks), timeout_seconds=90)
    stop.set()
    await asyncio.gather(*services, return_exceptions=True)
    _say(f"-> {len(sent)} notifications sent (outbox: {outbox_path()}):")
    for message in sent:
        _show(message)
    if stack.temporal.ui_url:
        _say(f"-> Temporal UI: {stack.temporal.ui_url}  (the journeys wait there for their next steps: review "
             "requests in 3 days, the cart reminder in 1 hour, welcome tips on day 2)")
    _say("-> Kafka, Temporal and PostgreSQL keep running; stop them with: .venv/bin/eventflow dev down")
    return 0 if len(sent) >= len(marks) else 1


def run_demo() -> int:
    """Entry point of ``eventflow dev run``; returns the process exit code."""
    stack = Stack()
    try:
        load_settings(dev_defaults=False)
        external = True
    except ConfigError as exc:
        if exc.variable not in ("KAFKA_BOOTSTRAP_SERVERS", "TEMPORAL_ADDRESS"):
            raise
        external = False
    if not external:
        _say("-> provisioning and starting Kafka, Temporal and PostgreSQL (first run downloads and builds; later runs "
             "take seconds)")
        endpoints = stack.up()
        _say(f"-> Kafka at {endpoints.kafka_bootstrap_servers}, Temporal at {endpoints.temporal_address}")
    return asyncio.run(_run(stack))
