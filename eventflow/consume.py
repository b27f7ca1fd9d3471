"""Wires the consumer process together from validated settings."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import structlog
from prometheus_client import CollectorRegistry

from activities.addresses import address_hasher
from consumer.catalog_routes import follow_catalog, follow_segments
from consumer.catalog_topic import CatalogFollower
from consumer.dispatch import CustomerState, Dispatcher
from consumer.handler import EventRouter
from consumer.metrics import ConsumerMetrics
from consumer.routes import EventRoutes, SegmentRoutes
from consumer.segment_triggers import SegmentRefresher, SegmentTriggers
from consumer.service import BackgroundTask, ConsumerService
from consumer.startup import StartupStopped, check_dependencies, connect_temporal, wait_for_dependency
from consumer.wiring import build_consumer_service
from core.http import OpsServer, ReadinessCheck, all_of, kafka_check, temporal_check
from core.settings import AddressHashSettings, CatalogSettings, ChannelSettings, DatabaseSettings
from core.temporal_client import connect
from eventflow.commands.temporal_setup import search_attributes_check
from eventflow.settings import Settings
from events.config import build_record_decoder, load_config
from events.sources import SOURCES_FILE
from journeys.expressions import ExpressionMetrics
from journeys.loader import default_journeys_dir, load_all
from journeys.segments import load_segments
from journeys.topics import read_topics
from store import CustomerBatcher, CustomerStore, FieldCipher, StoreDevices, StoreMetrics, database_check, open_store
from store.segments import SegmentBatcher, SegmentStore

log = structlog.get_logger(__name__)


async def build_consumer(settings: Settings, registry: CollectorRegistry, *,
                         stop: asyncio.Event | None = None, catalog: CatalogSettings | None = None,
                         customers: CustomerState | None = None,
                         segments: SegmentBatcher | None = None,
                         channels: ChannelSettings | None = None) -> ConsumerService:
    """A consumer service with its Temporal client, decoder, router and dead-letter producer.

    Waits for Kafka, the registry (if configured) and Temporal up to the start-up deadline.

    Raises:
        DependencyUnavailableError: one of them stayed unreachable (its message is one line).
        StartupStopped: ``stop`` was set while waiting.
        CatalogUnavailableError: the catalog source is kafka and its topic cannot be read.
    """
    events = load_config()
    await wait_for_dependency(lambda: check_dependencies(settings.kafka.client_config(), events.registry),
                              stop=stop)
    client = await wait_for_dependency(
        lambda: connect_temporal(settings.temporal.address, lambda: connect(settings.temporal)), stop=stop)
    router: EventRouter
    background: list[BackgroundTask] = []
    follower: CatalogFollower | None = None
    if catalog is not None and catalog.source == "kafka":
        router, follower = await follow_catalog(settings.kafka.client_config(), catalog.topic, keys=catalog.trust(),
                                                registry=registry,
                                                timeout_seconds=catalog.startup_timeout_seconds,
                                                expression_metrics=ExpressionMetrics(registry),
                                                channels=channels)
        background.append(follower)
    else:
        # Off the loop: validation may read a source schema from the registry.
        definitions = await asyncio.to_thread(load_all)
        log.info("journeys_loaded", journeys=[f"{d.id}@v{d.version}" for d in definitions])
        router = EventRoutes(definitions, expression_metrics=ExpressionMetrics(registry))
    dispatcher = Dispatcher(client, settings.temporal.task_queue, customers, segments)
    if segments is not None:
        refresher = SegmentRefresher(segments.store, settings.consumer.segment_refresh_seconds,
                                     retention=timedelta(days=settings.consumer.customer_events_retention_days))
        if follower is not None:
            # The catalog's segments, not the files', and each new version live.
            follow_segments(follower, segments.store, refresher)
        # Entries and exits start and exit journeys through the same router and dispatcher.
        background.append(SegmentTriggers(segments.store.pool, router, dispatcher))
        background.append(refresher)
        router = SegmentRoutes(router, segments.store)
    return build_consumer_service(
        kafka=settings.kafka, settings=settings.consumer,
        decoder=build_record_decoder(sources_file=default_journeys_dir() / SOURCES_FILE),
        router=router, dispatcher=dispatcher,
        metrics=ConsumerMetrics(registry), background=background,
    )


async def run_consumer(settings: Settings, stop: asyncio.Event | None = None, *,
                       catalog: CatalogSettings | None = None, database: DatabaseSettings | None = None,
                       addresses: AddressHashSettings | None = None,
                       channels: ChannelSettings | None = None) -> None:
    """Runs one consumer-group member until SIGTERM/SIGINT (or ``stop``), serving ops endpoints.

    With a ``database``, profiles, consent and tombstones are read and written in the customer
    store, batched; without, in per-customer Temporal workflows (the pre-store layout). Segments (with
    a ``database`` only) come from the segment files, or with the catalog source kafka from the catalog
    topic, followed live.
    ``addresses`` key the address index (unkeyed without). ``channels`` name the providers: with the
    live catalog, outside development mode, a journey on a channel none serves is refused (``eventflow
    consume`` always passes them; None, for embedders and tests, leaves the refusal to the workers).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    started: list[ConsumerService] = []

    async def consuming() -> tuple[bool, str]:
        return started[0].readiness() if started else (False, "starting: waiting for dependencies")

    # Kafka and Temporal are probed on connections of their own (same settings), so readiness
    # reflects both dependencies without reaching into the service's clients.
    attributes: list[ReadinessCheck] = []

    async def search_attributes() -> tuple[bool, str]:
        # Journeys are started with custom search attributes: a namespace without them rejects every start.
        if not attributes:
            attributes.append(search_attributes_check(await connect(settings.temporal), settings.temporal.namespace))
        return await attributes[0]()

    # Registered with or without a store, so the store's series exist (at zero) for dashboards and alerts.
    store_metrics = StoreMetrics(registry)
    pool = await open_store(database) if database is not None else None
    checks = {
        "consumer": consuming,
        "kafka": kafka_check(settings.kafka.client_config()),
        "temporal": temporal_check(lambda: connect(settings.temporal)),
        "search_attributes": search_attributes,
    }
    customers: CustomerState | None = None
    segments: SegmentBatcher | None = None
    if pool is not None:
        checks["database"] = database_check(pool)
        store_metrics.watch(pool)
        cipher = FieldCipher(settings.temporal.payload_keyring())
        customers = CustomerBatcher(CustomerStore(pool, cipher, metrics=store_metrics,
                                                  hasher=address_hasher(addresses or AddressHashSettings())),
                                    StoreDevices(pool, cipher, metrics=store_metrics))
        # The topics file the workers send by (journeys/topics.yaml): consent conditions apply its defaults.
        topics = await asyncio.to_thread(lambda: read_topics(default_journeys_dir()))
        if catalog is not None and catalog.source == "kafka":
            # No segments until the catalog is read (`follow_segments`); then each publish takes effect live.
            segments = SegmentBatcher(SegmentStore(pool, [], topics=topics, metrics=store_metrics))
        else:
            # Off the loop (file reads); a bad segment file stops start-up naming its file and line.
            defined = await asyncio.to_thread(load_segments)
            if defined:
                segments = SegmentBatcher(SegmentStore(pool, defined, topics=topics, metrics=store_metrics))
                log.info("segments_loaded", segments=[f"{s.id}@v{s.version}" for s in defined])
    readiness = all_of(checks)

    # The ops server comes first: while start-up waits for a dependency, liveness holds and readiness says why.
    ops = OpsServer(registry, readiness, port=settings.metrics_port) if settings.metrics_port else None
    if ops is not None:
        await ops.start()
    try:
        try:
            started.append(await build_consumer(settings, registry, stop=stop, catalog=catalog, customers=customers,
                                                segments=segments, channels=channels))
        except StartupStopped:
            log.info("consumer_stopped_while_starting")
            return
        await started[0].run(stop)
    finally:
        if ops is not None:
            await ops.stop()
        if pool is not None:
            await pool.close()
