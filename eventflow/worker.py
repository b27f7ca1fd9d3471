"""Wires the worker process together from validated settings.

Replicas scale horizontally: every replica polls the same task queue (``EVENTFLOW_TASK_QUEUE``)
and takes on at most the configured concurrent activities and workflow tasks. ``/metrics`` serves
the send metrics and, merged in, the Temporal SDK's own metrics (exported by the SDK's Prometheus
endpoint on a loopback port).
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime

from activities.config import channel_rates_from, channels_from, check_channels, outbox_path, policy_from
from activities.metrics import SendMetrics
from activities.webhook import WebhookActivities
from eventflow.backlog import BacklogMetrics, BacklogMonitor, worker_queues
from core.http import OpsServer, all_of, temporal_check
from core.settings import CatalogSettings, ConsumerSettings, Settings, WorkerProcessSettings, WorkerSettings, worker_settings_from
from core.temporal_client import build_runtime, connect
from eventflow.commands.temporal_setup import search_attributes_check
from consumer.catalog_topic import CatalogFollower, CatalogMetrics
from core.errors import ConfigError
from journeys import JourneyDefinition, load_all
from journeys.catalog import Catalog, JourneyState
from workflows.queues import send_task_queue
from workflows.worker import WorkerLimits, build_worker

log = structlog.get_logger(__name__)


def worker_limits(worker: WorkerSettings, drain: ConsumerSettings) -> WorkerLimits:
    """The worker's capacity; it drains within the same deadline as the consumer."""
    return WorkerLimits(max_concurrent_activities=worker.max_concurrent_activities,
                        max_concurrent_workflow_tasks=worker.max_concurrent_workflow_tasks,
                        graceful_shutdown_seconds=drain.shutdown_grace_seconds)


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


def sdk_runtime(port: int) -> Runtime:
    """The worker's Temporal runtime: core logs forwarded, SDK metrics on ``127.0.0.1:port`` (0: none)."""
    if port == 0:
        return build_runtime()
    return build_runtime(PrometheusConfig(
        bind_address=f"127.0.0.1:{port}", counters_total_suffix=True, durations_as_seconds=True))


def _send_channels(node: Any) -> Iterator[str]:
    match node:
        case {"send": {"channel": str(channel), **send}}:
            yield channel
            fallback = send.get("fallback")
            if isinstance(fallback, str):
                yield fallback
            yield from (c for value in node.values() for c in _send_channels(value))
        case dict():
            yield from (c for value in node.values() for c in _send_channels(value))
        case list():
            yield from (c for item in node for c in _send_channels(item))


def journey_channels(definitions: Iterable[JourneyDefinition]) -> frozenset[str]:
    """Every channel the journeys can send on: send steps' channels and fallbacks, and their templates'.

    Read from each definition's snapshot (the JSON a journey instance starts with), so nested steps
    (branches, splits, digests) are covered whatever their shape; a template's channels are counted
    too, which errs towards "used" when failing closed.
    """
    used: set[str] = set()
    for definition in definitions:
        snapshot = definition.snapshot()
        used.update(_send_channels(snapshot["steps"]))
        for template in snapshot["templates"].values():
            used.update(template["variants"])
    return frozenset(used)


async def _catalog_follower(process: WorkerProcessSettings, registry: CollectorRegistry) -> CatalogFollower | None:
    """With the catalog source kafka: the catalog read to its end, followed to re-check channels on change.

    Instances run their start input's snapshot (steps and templates), so the worker needs the
    definitions only to check, failing closed, that no journey sends on a channel it serves from the outbox.
    """
    if process.catalog.source != "kafka":
        return None
    if process.kafka is None:
        raise ConfigError(CatalogSettings.variable("source"), "kafka needs the Kafka settings (KAFKA_BOOTSTRAP_SERVERS)")
    follower = CatalogFollower(process.kafka.client_config(), process.catalog.topic, metrics=CatalogMetrics(registry))
    await follower.load(process.catalog.startup_timeout_seconds)

    def recheck(catalog: Catalog) -> None:
        try:
            check_channels(journey_channels(catalog.definitions(*JourneyState)), process.channels)
        except ConfigError as exc:
            # A running worker cannot refuse a published journey; it says so loudly instead.
            log.error("catalog_journey_channel_unserved", error=str(exc))

    follower.on_change = recheck
    return follower


async def run_worker(settings: Settings | WorkerProcessSettings, stop: asyncio.Event | None = None,
                     registry: CollectorRegistry | None = None) -> None:
    """Runs the journey worker until SIGTERM/SIGINT (or ``stop``), then drains in-flight activities.

    Args:
        settings: the worker's settings (`load_worker`); given only the shared `Settings`, the
            worker's own are read from the process environment.

    Raises:
        ConfigError: before connecting, when a channel the journeys use is served by the outbox
            outside development mode (see `activities.config.check_providers`).
    """
    process = settings if isinstance(settings, WorkerProcessSettings) else worker_settings_from(settings)
    registry = registry or CollectorRegistry()
    follower = await _catalog_follower(process, registry)
    check_channels(journey_channels(load_all(process.journeys.journeys_dir) if follower is None
                                    else follower.catalog.definitions(*JourneyState)), process.channels)
    channels = channels_from(process.channels, process.sendgrid, process.twilio,
                             outbox=process.channels.outbox_path or outbox_path(),
                             status_callback_base_url=process.webhook_url.public_url, smtp=process.smtp)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    limits = worker_limits(process.worker, process.consumer)
    runtime = sdk_runtime(process.worker.temporal_metrics_port)
    if process.worker.temporal_metrics_port:
        registry.register(SdkMetricsCollector(f"http://127.0.0.1:{process.worker.temporal_metrics_port}/metrics"))
    client = await connect(process.temporal, runtime=runtime)
    worker = build_worker(client, process.temporal.task_queue, channels, limits=limits,
                          metrics=SendMetrics(registry), policy=policy_from(process.worker),
                          channel_rates_per_second=channel_rates_from(process.channels, process.sendgrid,
                                                                      process.twilio, process.smtp),
                          webhooks=WebhookActivities.from_settings(process.webhook_steps))
    queue = process.temporal.task_queue
    backlog = BacklogMonitor(client, process.temporal.namespace,
                             worker_queues(queue, [send_task_queue(queue, channel) for channel in sorted(channels)]),
                             BacklogMetrics(registry))

    # Not ready while a journey's search attributes are missing: the consumer's starts would be
    # rejected, so the namespace needs `eventflow temporal setup` before this release serves.
    readiness = all_of({"temporal": temporal_check(client),
                        "search_attributes": search_attributes_check(client, process.temporal.namespace)})
    port = process.ops.metrics_port
    ops = OpsServer(registry, readiness, port=port) if port else None
    if ops is not None:
        await ops.start()
    try:
        async with worker:
            log.info("worker_started", task_queue=process.temporal.task_queue,
                     max_concurrent_activities=limits.max_concurrent_activities)
            backlog_task = asyncio.create_task(backlog.run(stop), name="task-queue-backlog")
            catalog_task = (asyncio.create_task(follower.run(stop), name=follower.name) if follower is not None
                            else None)
            await stop.wait()
            log.info("worker_draining")
            await backlog_task
            if catalog_task is not None:
                await asyncio.wait_for(catalog_task, 5.0)
    finally:
        if ops is not None:
            await ops.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("worker_stopped")
