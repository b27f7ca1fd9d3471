"""Wires the consumer process together from validated settings."""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry

from consumer.dispatch import Dispatcher
from consumer.metrics import ConsumerMetrics
from consumer.routes import EventRoutes
from consumer.service import ConsumerService
from consumer.startup import check_dependencies, connect_temporal
from consumer.wiring import build_consumer_service
from eventflow.http import OpsServer, all_of, kafka_check, temporal_check
from eventflow.settings import Settings
from eventflow.temporal_client import connect
from events.config import build_decoder, load_config
from journeys.loader import load_all

log = structlog.get_logger(__name__)


async def build_consumer(settings: Settings, registry: CollectorRegistry) -> ConsumerService:
    """A consumer service with its Temporal client, decoder, router and dead-letter producer.

    Raises:
        DependencyUnavailableError: Kafka, the registry or Temporal cannot be reached (one line).
    """
    events = load_config()
    await check_dependencies(settings.kafka.client_config(), events.registry)
    client = await connect_temporal(settings.temporal.address, lambda: connect(settings.temporal))
    definitions = load_all()
    log.info("journeys_loaded", journeys=[f"{d.id}@v{d.version}" for d in definitions])
    return build_consumer_service(
        kafka=settings.kafka, settings=settings.consumer, decoder=build_decoder(),
        router=EventRoutes(definitions), dispatcher=Dispatcher(client, settings.temporal.task_queue),
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

    async def consuming() -> tuple[bool, str]:
        return service.readiness()

    # Kafka and Temporal are probed on connections of their own (same settings), so readiness
    # reflects both dependencies without reaching into the service's clients.
    readiness = all_of({
        "consumer": consuming,
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
