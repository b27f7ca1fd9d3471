"""Wires the consumer process together from validated settings."""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry

from consumer.dead_letter import DeadLetterPublisher
from consumer.dispatch import Dispatcher
from consumer.metrics import ConsumerMetrics
from consumer.service import ConsumerService
from eventflow.http import OpsServer, all_of, kafka_check, temporal_check
from eventflow.settings import Settings
from eventflow.temporal_client import connect
from events.config import build_decoder
from journeys.loader import load_all
from consumer.routes import EventRoutes

log = structlog.get_logger(__name__)


async def build_consumer(settings: Settings, registry: CollectorRegistry) -> ConsumerService:
    """A consumer service with its Temporal client, decoder, router and dead-letter producer."""
    client = await connect(settings.temporal)
    definitions = load_all()
    log.info("journeys_loaded", journeys=[f"{d.id}@v{d.version}" for d in definitions])
    return ConsumerService(
        kafka=settings.kafka,
        settings=settings.consumer,
        decoder=build_decoder(),
        router=EventRoutes(definitions),
        dispatcher=Dispatcher(client, settings.temporal.task_queue),
        dead_letters=DeadLetterPublisher(settings.kafka.client_config(), settings.kafka.dlq_topic),
        metrics=ConsumerMetrics(registry),
    )


async def run_consumer(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs one consumer-group member until SIGTERM/SIGINT (or ``stop``), serving ops endpoints."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    service = await build_consumer(settings, registry)

    async def polling() -> tuple[bool, str]:
        return (True, "polling") if service.ready else (False, "not yet polling")

    # Kafka and Temporal are probed on connections of their own (same settings), so readiness
    # reflects both dependencies without reaching into the service's clients.
    readiness = all_of({
        "consumer": polling,
        "kafka": kafka_check(settings.kafka.client_config()),
        "temporal": temporal_check(lambda: connect(settings.temporal)),
    })

    ops = OpsServer(registry, readiness, port=settings.metrics_port) if settings.metrics_port else None
    if ops is not None:
        await ops.start()
    try:
        await service.run(stop)
    finally:
        if ops is not None:
            await ops.stop()
