"""Wires the worker process together from validated settings.

Replicas scale horizontally: every replica polls the same task queue (``EVENTFLOW_TASK_QUEUE``)
and takes on at most the configured concurrent activities and workflow tasks. ``/metrics`` serves
the send metrics and, merged in, the Temporal SDK's own metrics (exported by the SDK's Prometheus
endpoint on a loopback port).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime
from temporalio.worker import WorkflowRunner

from activities.addresses import address_hasher
from activities.config import (
    channel_rates_from,
    channels_from,
    check_channels,
    check_lease_covers_calls,
    circuit_policy_from,
    outbox_path,
    policy_from,
)
from activities.links import MessageLinks
from activities.metrics import SendMetrics
from activities.send import NotificationActivities
from activities.webhook import WebhookActivities
from consumer.catalog_channels import CatalogChannelCheck, journey_channels
from consumer.catalog_topic import CatalogFollower, CatalogMetrics
from core.errors import ConfigError
from core.http import OpsServer, ReadinessCheck, all_of, temporal_check
from core.preference_links import PreferenceLinks
from core.settings import CatalogSettings, ConsumerSettings, PreferenceLinkSettings, WorkerSettings
from core.tasks import stop_all, supervised
from core.temporal_client import build_runtime, connect
from eventflow.backlog import BacklogMetrics, BacklogMonitor, worker_queues
from eventflow.commands.temporal_setup import search_attributes_check
from eventflow.settings import Settings, WorkerProcessSettings, worker_settings_from
from journeys import load_all
from journeys.loader import default_journeys_dir
from journeys.topics import read_topics
from store import (
    CustomerStore,
    FieldCipher,
    PostgresLedger,
    StoreDevices,
    StoreMetrics,
    database_check,
    open_store,
)
from store.broadcast_activities import BroadcastActivities, BroadcastMetrics
from store.broadcasts import BroadcastStore
from workflows.queues import send_task_queue
from workflows.worker import (
    UNSANDBOXED_RUNNER,
    WORKFLOW_RUNNER,
    BroadcastActivitiesFactory,
    WorkerLimits,
    build_worker,
)

log = structlog.get_logger(__name__)


def _broadcasting(store: BroadcastStore, metrics: BroadcastMetrics, contacts: CustomerStore,
                  concurrency: int) -> BroadcastActivitiesFactory:
    def activities(sender: NotificationActivities) -> list[Callable[..., Any]]:
        broadcast = BroadcastActivities(store, sender, metrics=metrics, contacts=contacts, concurrency=concurrency)
        return [broadcast.start, broadcast.send_batch]

    return activities


def worker_limits(worker: WorkerSettings, drain: ConsumerSettings) -> WorkerLimits:
    """The worker's capacity; it drains within the same deadline as the consumer."""
    return WorkerLimits(max_concurrent_activities=worker.max_concurrent_activities,
                        max_concurrent_workflow_tasks=worker.max_concurrent_workflow_tasks,
                        workflow_task_pollers=worker.workflow_task_pollers,
                        activity_task_pollers=worker.activity_task_pollers,
                        graceful_shutdown_seconds=drain.shutdown_grace_seconds)


def workflow_runner(worker: WorkerSettings) -> WorkflowRunner:
    """How workflow code runs: unsandboxed unless ``EVENTFLOW_WORKER_WORKFLOW_SANDBOX`` asks for the
    checking sandbox (ADR "Workflows run unsandboxed in production, sandboxed in tests")."""
    return WORKFLOW_RUNNER if worker.workflow_sandbox else UNSANDBOXED_RUNNER


def provider_call_threads(worker: WorkerSettings) -> ThreadPoolExecutor:
    """The threads blocking provider SDK calls run on (SendGrid's and Twilio's clients block).

    asyncio's default executor has min(32, cores + 4) threads, six on a two-core pod, which would hold
    every send of the replica to six provider calls in flight. Each running activity makes at most
    one such call at a time, and a broadcast batch one per send it runs at once.
    """
    return ThreadPoolExecutor(max_workers=worker.max_concurrent_activities + worker.broadcast_send_concurrency,
                              thread_name_prefix="provider-call")


class SdkMetricsCollector(Collector):
    """Re-exports the Temporal SDK's Prometheus endpoint (loopback) through the worker's registry.

    The SDK's metrics live in its Rust core; reading its exporter on each scrape keeps one
    ``/metrics`` per pod. A failed read yields nothing rather than failing the scrape.
    """

    def __init__(self, url: str, timeout_seconds: float = 1.0) -> None:
        self._url = url
        self._timeout_seconds = timeout_seconds

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout_seconds) as response:  # noqa: S310 - our own loopback URL
                text = response.read().decode()
        except OSError:
            return
        yield from text_string_to_metric_families(text)


class _OneShutdownLine(logging.Filter):
    """Drops the SDK's "Beginning worker shutdown": it logs one per `Worker` (the journeys' and each
    channel's send queue), while `worker_draining` says it once for the process, with the deadline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Beginning worker shutdown")


_SDK_WORKER_LOGGER = logging.getLogger("temporalio.worker._worker")


def sdk_runtime(port: int) -> Runtime:
    """The worker's Temporal runtime: core logs forwarded, SDK metrics on ``127.0.0.1:port`` (0: none)."""
    if port == 0:
        return build_runtime()
    try:
        return build_runtime(PrometheusConfig(
            bind_address=f"127.0.0.1:{port}", counters_total_suffix=True, durations_as_seconds=True))
    except ValueError as exc:  # the SDK's "Failed starting Prometheus exporter: Address already in use"
        raise ConfigError(WorkerSettings.variable("temporal_metrics_port"),
                          f"cannot listen on 127.0.0.1:{port}: {exc}; set a free port (0 turns it off)") from exc


async def _catalog_follower(process: WorkerProcessSettings, registry: CollectorRegistry) -> CatalogFollower | None:
    """With the catalog source kafka: the catalog read to its end, followed to re-check channels on change.

    Instances run their start input's snapshot (steps and templates), so the worker needs the
    definitions only to refuse, failing closed, journeys that send on a channel no provider serves
    (`CatalogChannelCheck`).
    """
    if process.catalog.source != "kafka":
        return None
    if process.kafka is None:
        raise ConfigError(CatalogSettings.variable("source"), "kafka needs the Kafka settings (KAFKA_BOOTSTRAP_SERVERS)")
    metrics = CatalogMetrics(registry)
    follower = CatalogFollower(process.kafka.client_config(), process.catalog.topic, keys=process.catalog.trust(),
                               metrics=metrics)
    check = CatalogChannelCheck(process.channels, metrics)
    check(await follower.load(process.catalog.startup_timeout_seconds))
    follower.on_change = check
    follower.extra_note = check.note
    return follower


def _catalog_check(follower: CatalogFollower) -> ReadinessCheck:
    """Not ready once the follower stops or cannot read the topic; the detail names skipped records."""

    async def check() -> tuple[bool, str]:
        return follower.readiness()

    return check


def message_links(settings: PreferenceLinkSettings) -> MessageLinks | None:
    """The preference center's links for messages, or None when no public URL is configured."""
    keys = settings.keys()
    if not settings.public_url or keys is None:
        log.warning("preference_links_off", reason="EVENTFLOW_PREFERENCES_PUBLIC_URL is unset: templates get an empty "
                    "preferences_url and emails carry no List-Unsubscribe header")
        return None
    return MessageLinks(PreferenceLinks(keys), settings.public_url, page_seconds=settings.link_days * 86400.0,
                        unsubscribe_seconds=settings.unsubscribe_days * 86400.0, mailto=settings.unsubscribe_mailto)


async def run_worker(settings: Settings | WorkerProcessSettings, stop: asyncio.Event | None = None,
                     registry: CollectorRegistry | None = None) -> None:
    """Runs the journey worker until SIGTERM/SIGINT (or ``stop``), then drains in-flight activities.

    Args:
        settings: the worker's settings (`load_worker`); given only the shared `Settings`, the
            worker's own are read from the process environment.

    Raises:
        ConfigError: before connecting, when a channel the journey files use is served by the
            outbox outside development mode (see `activities.config.check_providers`); catalog
            journeys on such a channel are refused instead (`CatalogChannelCheck`); or when some
            provider's call cannot end inside the send lease (`activities.config.check_lease_covers_calls`).
    """
    process = settings if isinstance(settings, WorkerProcessSettings) else worker_settings_from(settings)
    registry = registry or CollectorRegistry()
    follower = await _catalog_follower(process, registry)
    if follower is None:  # journeys from files are part of the release: a missing provider stops it
        check_channels(journey_channels(load_all(process.journeys.journeys_dir)), process.channels)
    channels = channels_from(process.channels, process.sendgrid, process.twilio,
                             outbox=process.channels.outbox_path or outbox_path(),
                             status_callback_base_url=process.webhook_url.public_url, smtp=process.smtp,
                             fcm=process.fcm, webpush=process.webpush)
    policy = policy_from(process.worker)
    check_lease_covers_calls(channels, policy)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(provider_call_threads(process.worker))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not any(isinstance(f, _OneShutdownLine) for f in _SDK_WORKER_LOGGER.filters):
        _SDK_WORKER_LOGGER.addFilter(_OneShutdownLine())
    limits = worker_limits(process.worker, process.consumer)
    runtime = sdk_runtime(process.worker.temporal_metrics_port)
    if process.worker.temporal_metrics_port:
        registry.register(SdkMetricsCollector(f"http://127.0.0.1:{process.worker.temporal_metrics_port}/metrics"))
    client = await connect(process.temporal, runtime=runtime)
    # Registered with or without a store, so the store's series exist (at zero) for dashboards and alerts.
    store_metrics = StoreMetrics(registry)
    # Like the store's: registered with or without a store, so the dashboard's broadcast panel has its series.
    broadcast_metrics = BroadcastMetrics(registry)
    pool = await open_store(process.database)
    hasher = address_hasher(process.addresses)
    ledger: PostgresLedger | None = None
    contacts: CustomerStore | None = None
    devices: StoreDevices | None = None
    broadcasts: BroadcastActivitiesFactory | None = None
    if pool is not None:
        store_metrics.watch(pool)
        ledger = PostgresLedger(pool, store_metrics)
        cipher = FieldCipher(process.temporal.payload_keyring())
        contacts = CustomerStore(pool, cipher, metrics=store_metrics, hasher=hasher)
        devices = StoreDevices(pool, cipher, metrics=store_metrics)
        broadcasts = _broadcasting(BroadcastStore(pool), broadcast_metrics, contacts,
                                  process.worker.broadcast_send_concurrency)
    worker = build_worker(client, process.temporal.task_queue, channels, limits=limits, ledger=ledger, contacts=contacts,
                          devices=devices, broadcasts=broadcasts, hasher=hasher,
                          topics=read_topics(process.journeys.journeys_dir or default_journeys_dir()),
                          links=message_links(process.preference_links),
                          metrics=SendMetrics(registry), policy=policy,
                          channel_rates_per_second=channel_rates_from(process.channels, process.sendgrid,
                                                                      process.twilio, process.smtp, process.fcm,
                                                                      process.webpush),
                          webhooks=WebhookActivities.from_settings(process.webhook_steps),
                          circuit=circuit_policy_from(process.channels), inbound=contacts,
                          workflow_runner=workflow_runner(process.worker))
    queue = process.temporal.task_queue
    backlog = BacklogMonitor(client, process.temporal.namespace,
                             worker_queues(queue, [send_task_queue(queue, channel) for channel in sorted(channels)]),
                             BacklogMetrics(registry))

    # Not ready while a journey's search attributes are missing: the consumer's starts would be
    # rejected, so the namespace needs `eventflow temporal setup` before this release serves.
    checks = {"temporal": temporal_check(client),
              "search_attributes": search_attributes_check(client, process.temporal.namespace)}
    if pool is not None:
        checks["database"] = database_check(pool)
    if follower is not None:
        checks["catalog"] = _catalog_check(follower)
    readiness = all_of(checks)
    port = process.ops.metrics_port
    ops = OpsServer(registry, readiness, port=port) if port else None
    if ops is not None:
        await ops.start()
    try:
        async with worker:
            log.info("worker_started", task_queue=process.temporal.task_queue,
                     max_concurrent_activities=limits.max_concurrent_activities)
            # Owned here: a loop that fails is logged at once (readiness reports the catalog's), and
            # both are awaited however the worker ends, so no failure is left unread.
            background = [supervised(backlog.run(stop), name="task-queue-backlog")]
            if follower is not None:
                background.append(supervised(follower.run(stop), name=follower.name))
            try:
                await stop.wait()
                log.info("worker_draining", deadline_seconds=limits.graceful_shutdown_seconds)
            finally:
                stop.set()
                await stop_all(background, wait_seconds=5.0)
    finally:
        if ops is not None:
            await ops.stop()
        if pool is not None:
            await pool.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("worker_stopped")
