"""Wires ``eventflow webhooks`` together from validated settings: receiver, feedback consumer, ops server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from activities.addresses import address_hasher
from consumer.feedback import FeedbackApplier, FeedbackConsumer, FeedbackMetrics
from core.http import OpsServer, all_of, kafka_check
from core.temporal_client import connect
from eventflow.settings import WebhooksProcessSettings
from eventflow.webhooks.devices import DeviceApi
from eventflow.webhooks.handoff import KafkaHandoff
from eventflow.webhooks.server import WebhookMetrics, WebhookServer
from eventflow.webhooks.verify import SendGridVerifier, TwilioVerifier
from store import CustomerStore, FieldCipher, StoreDevices, StoreMetrics, database_check, open_store
from store.feedback import StoreFeedback

log = structlog.get_logger(__name__)


def verifiers(settings: WebhooksProcessSettings) -> tuple[SendGridVerifier | None, TwilioVerifier | None]:
    """The signature checks the settings allow; a provider without its key or token is refused (403)."""
    hooks = settings.webhooks
    key = hooks.sendgrid_verification_key
    sendgrid = SendGridVerifier(key.get_secret_value(), hooks.replay_window_seconds) if key is not None else None
    token, public_url = settings.twilio.auth_token, settings.webhook_url.public_url
    twilio = TwilioVerifier(token.get_secret_value(), public_url) if token is not None and public_url else None
    if twilio is None:
        log.warning("twilio_webhooks_refused", why="TWILIO_AUTH_TOKEN or EVENTFLOW_WEBHOOKS_PUBLIC_URL unset")
    if sendgrid is None:
        log.warning("sendgrid_webhooks_refused", why="SENDGRID_WEBHOOK_VERIFICATION_KEY unset")
    return sendgrid, twilio


def device_api(settings: WebhooksProcessSettings, pool: asyncpg.Pool | None,
               metrics: StoreMetrics | None = None) -> DeviceApi | None:
    """The device API, when there are tokens and a customer store to keep devices in; else it refuses all (401)."""
    tokens = settings.webhooks.device_tokens()
    if not tokens or pool is None:
        log.warning("device_api_refused", why="EVENTFLOW_DEVICE_API_TOKENS unset" if not tokens
                    else "no customer store (EVENTFLOW_DATABASE_URL)")
        return None
    cipher = FieldCipher(settings.temporal.payload_keyring())
    customers = CustomerStore(pool, cipher, metrics=metrics, hasher=address_hasher(settings.addresses))
    return DeviceApi(StoreDevices(pool, cipher, metrics=metrics), customers, tokens)


async def run_webhooks(settings: WebhooksProcessSettings, stop: asyncio.Event | None = None, *,
                       registry: CollectorRegistry | None = None,
                       before_flush: Callable[[], None] | None = None, consume: bool = True) -> None:
    """Runs the webhook server and the feedback consumer until SIGTERM/SIGINT (or ``stop``).

    Args:
        before_flush: a test hook run after a request's records are queued, before the flush.
        consume: also run the feedback consumer (off for a receiver-only replica).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = registry or CollectorRegistry()
    sendgrid, twilio = verifiers(settings)
    hooks = settings.webhooks
    client_config = settings.kafka.client_config()
    handoff = KafkaHandoff(client_config, hooks.feedback_topic, timeout_seconds=hooks.request_deadline_seconds * 0.8,
                           before_flush=before_flush)
    # Registered with or without a store, so the store's series exist (at zero) for dashboards and alerts.
    store_metrics = StoreMetrics(registry)
    pool = await open_store(settings.database)
    if pool is not None:
        store_metrics.watch(pool)
    server = WebhookServer(handoff, WebhookMetrics(registry), sendgrid=sendgrid, twilio=twilio, port=hooks.port,
                           request_deadline_seconds=hooks.request_deadline_seconds,
                           max_connections=hooks.max_connections, max_body_bytes=hooks.max_body_bytes,
                           hasher=address_hasher(settings.addresses),
                           max_connections_per_source=hooks.max_connections_per_source,
                           idle_seconds=hooks.idle_seconds, devices=device_api(settings, pool, store_metrics))
    state = {"feedback": "off"}
    tasks: list[asyncio.Task[None]] = []
    if consume:
        tasks.append(asyncio.create_task(_feed(settings, registry, pool, store_metrics, stop, state),
                                         name="feedback-consumer"))
        # A consumer that died is a bug, not an outage: end the process so it is restarted.
        tasks[0].add_done_callback(lambda _: stop.set())

    async def feedback_state() -> tuple[bool, str]:
        # Reported, not required: the receiver hands reports to Kafka whether or not Temporal is up.
        return True, state["feedback"]

    checks = {"kafka": kafka_check(client_config, hooks.feedback_topic), "feedback": feedback_state}
    if pool is not None:
        checks["database"] = database_check(pool)
    ops = OpsServer(registry, all_of(checks), port=settings.ops.metrics_port) if settings.ops.metrics_port else None
    if ops is not None:
        await ops.start()
    await server.start()
    try:
        await stop.wait()
        log.info("webhooks_draining")
    finally:
        await server.stop()
        await asyncio.to_thread(handoff.close)
        if tasks:
            await asyncio.wait(tasks, timeout=settings.consumer.shutdown_grace_seconds)
        if ops is not None:
            await ops.stop()
        if pool is not None:
            await pool.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("webhooks_stopped")
    for task in tasks:
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error


async def _feed(settings: WebhooksProcessSettings, registry: CollectorRegistry, pool: asyncpg.Pool | None,
                store_metrics: StoreMetrics, stop: asyncio.Event, state: dict[str, str]) -> None:
    """Connects to Temporal (retrying while it is away) and applies the feedback topic until ``stop``."""
    state["feedback"] = "connecting"
    delay = 1.0
    while True:
        try:
            client = await asyncio.wait_for(connect(settings.temporal), 20)
            break
        except Exception as exc:  # noqa: BLE001 - any failure to connect is waited out; reports wait in Kafka
            log.warning("feedback_temporal_unreachable", error_type=type(exc).__name__, delay_seconds=delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            delay = min(delay * 2, 30.0)
    state["feedback"] = "running"
    metrics = FeedbackMetrics(registry)
    hooks = settings.webhooks
    store = StoreFeedback(pool, store_metrics) if pool is not None else None
    consumer = FeedbackConsumer(settings.kafka.client_config(), hooks.feedback_topic, hooks.feedback_group,
                                FeedbackApplier(client, settings.temporal.task_queue, metrics, store=store),
                                metrics=metrics)
    await consumer.run(stop)
