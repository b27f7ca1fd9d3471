"""The webhook HTTP server: verify, parse, hand off to Kafka, and only then answer 2xx.

Routes (POST): ``/sendgrid/events`` (SendGrid Event Webhook), ``/twilio/status`` (message status
callbacks), ``/twilio/inbound`` (inbound messages: STOP / START / HELP, and when a customer last
wrote on WhatsApp); and the device API, POST/DELETE ``/customers/{id}/devices`` (`devices`:
bearer-token authenticated, 401 otherwise). Answers:

* 403 for a missing or wrong signature (or an unconfigured provider), before the body is parsed;
* 400 for a body the provider would not send; 413 over the size limit; 404 / 405 elsewhere;
* 503 when the hand-off failed or the request deadline passed (the provider retries);
* 200 once every record is on the feedback topic (Twilio inbound: an empty TwiML reply).

Like the ops server (`core.http`), each request has a whole-request deadline and the
server holds a bounded number of connections, answering 503 to the next one at once.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from activities.addresses import UNKEYED, AddressHasher
from consumer.feedback import FeedbackMessage
from core.http import CappedListener
from core.settings import WebhookSettings
from core.vocabulary import CHANNELS
from eventflow.webhooks.devices import DeviceApi, device_path, unauthorized
from eventflow.webhooks.handoff import HandoffError, KafkaHandoff
from eventflow.webhooks.parsing import (
    SENDGRID,
    TWILIO,
    MalformedRequest,
    RequestKind,
    sendgrid_events,
    twilio_inbound,
    twilio_status,
)
from eventflow.webhooks.verify import SendGridVerifier, TwilioVerifier

log = structlog.get_logger(__name__)

SENDGRID_PATH = "/sendgrid/events"
TWILIO_STATUS_PATH = "/twilio/status"
TWILIO_INBOUND_PATH = "/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

_ROUTES: Mapping[str, tuple[RequestKind, str]] = {
    SENDGRID_PATH: (RequestKind.SENDGRID_EVENTS, SENDGRID),
    TWILIO_STATUS_PATH: (RequestKind.TWILIO_STATUS, TWILIO),
    TWILIO_INBOUND_PATH: (RequestKind.TWILIO_INBOUND, TWILIO),
}
_CHANNELS = frozenset(CHANNELS)
#: The ``kind`` label of device API requests.
DEVICE_API_KIND = "devices"


class WebhookMetrics:
    """Webhook requests by kind and result, reports by channel, provider and outcome, inbound keywords and
    WhatsApp messages, hand-off latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("eventflow_webhook_requests_total",
                                "Webhook and device API requests by kind and result (accepted, forbidden, malformed, "
                                "too_large, unavailable; the device API: registered, removed, unauthorized, forgotten).", ["kind", "result"], registry=registry)
        self.reports = Counter("eventflow_delivery_reports_total",
                               "Delivery reports handed on, by channel, provider and outcome (a provider's retry "
                               "counts again; the ledger applies it once).",
                               ["channel", "provider", "outcome"], registry=registry)
        self.keywords = Counter("eventflow_inbound_keywords_total", "Inbound STOP/START keywords handed on.",
                                ["channel", "action"], registry=registry)
        # No labels: the sender is a phone number, which has no place in a metric.
        self.whatsapp_inbound = Counter("eventflow_whatsapp_inbound_messages",
                                        "Inbound WhatsApp messages handed on (each opens the customer's 24-hour "
                                        "window for free-form replies; a provider's retry counts again).",
                                        registry=registry)
        self.handoff_seconds = Histogram("eventflow_webhook_handoff_seconds",
                                         "Time to get a request's records acknowledged by Kafka.",
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
                                         registry=registry)


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None once it grows past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookServer:
    """Serves the provider webhooks on ``host:port``.

    Args:
        sendgrid: the SendGrid verifier; None refuses SendGrid requests (403).
        twilio: the Twilio verifier; None refuses Twilio requests (403).
        handoff: where verified records go.
        clock: wall-clock seconds (the replay window; injected by tests).
        hasher: names the addresses reports and keywords concern (`activities.addresses.AddressHasher`).
        max_connections_per_source: connections one IP address may hold (None: no limit beyond the cap).
        idle_seconds: how long a kept-alive connection may sit idle (the request deadline when None).
        devices: the device API; None (no customer store) refuses its requests like a wrong token (401).
    """

    def __init__(self, handoff: KafkaHandoff, metrics: WebhookMetrics, *, sendgrid: SendGridVerifier | None,
                 twilio: TwilioVerifier | None, host: str = "0.0.0.0", port: int = 8080,
                 request_deadline_seconds: float = 10.0, max_connections: int = 256,
                 max_body_bytes: int = 1_048_576, clock: Callable[[], float] = time.time,
                 hasher: AddressHasher = UNKEYED, max_connections_per_source: int | None = None,
                 idle_seconds: float | None = None, devices: DeviceApi | None = None) -> None:
        self._handoff = handoff
        self._hasher = hasher
        self._devices = devices
        self._metrics = metrics
        self._sendgrid = sendgrid
        self._twilio = twilio
        self._deadline = request_deadline_seconds
        self._max_body = max_body_bytes
        self._clock = clock
        self._listener = CappedListener(self._handle, host=host, port=port, max_connections=max_connections,
                                        header_deadline_seconds=request_deadline_seconds,
                                        port_variable=WebhookSettings.variable("port"),
                                        max_connections_per_source=max_connections_per_source,
                                        idle_seconds=idle_seconds)

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def refused_per_source(self) -> int:
        """Connections answered 503 because their source held its share."""
        return self._listener.refused_per_source

    @property
    def open_connections(self) -> int:
        """Connections being served now (not counting those answered 503 over the cap)."""
        return self._listener.open_connections

    async def start(self) -> None:
        await self._listener.start()
        log.info("webhook_server_started", port=self.port)

    async def stop(self) -> None:
        await self._listener.stop(shutdown_timeout_seconds=2.0)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        customer_id = device_path(request.rel_url.raw_parts)
        if customer_id is not None:
            return await self._serve_devices(customer_id, request)
        route = _ROUTES.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found\n")
        if request.method != "POST":
            return web.Response(status=405, text="method not allowed\n")
        kind, _ = route
        try:
            async with asyncio.timeout(self._deadline):
                status, response = await self._serve(kind, request)
        except TimeoutError:
            status, response = "unavailable", web.Response(status=503, text="request deadline exceeded\n")
        self._metrics.requests.labels(kind.value, status).inc()
        return response

    async def _serve_devices(self, customer_id: str, request: web.BaseRequest) -> web.Response:
        api = self._devices
        try:
            async with asyncio.timeout(self._deadline):
                # The token first, before the body is read: an unauthenticated caller costs nothing more.
                if api is None or not api.authorised(request.headers):
                    answer = unauthorized()
                    result, response = answer.result.value, answer.response
                elif (body := await _read_body(request, self._max_body)) is None:
                    result, response = "too_large", web.Response(status=413, text="body too large\n")
                else:
                    answer = await api.serve(request.method, customer_id, body)
                    result, response = answer.result.value, answer.response
        except TimeoutError:
            result, response = "unavailable", web.Response(status=503, text="request deadline exceeded\n")
        self._metrics.requests.labels(DEVICE_API_KIND, result).inc()
        return response

    async def _serve(self, kind: RequestKind, request: web.BaseRequest) -> tuple[str, web.Response]:
        body = await _read_body(request, self._max_body)
        if body is None:
            return "too_large", web.Response(status=413, text="body too large\n")
        now = self._clock()
        if kind is RequestKind.SENDGRID_EVENTS:
            if self._sendgrid is None or not self._sendgrid.verify(body, request.headers, now):
                return "forbidden", web.Response(status=403, text="bad signature\n")
        form: dict[str, str] = {}
        if kind is not RequestKind.SENDGRID_EVENTS:
            try:
                form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
            except UnicodeDecodeError:
                form = {}
            if self._twilio is None or not self._twilio.verify(request.raw_path, form, request.headers):
                return "forbidden", web.Response(status=403, text="bad signature\n")
        moment = datetime.fromtimestamp(now, UTC)
        try:
            messages = self._parse(kind, body, form, request.query, moment)
        except MalformedRequest as exc:
            log.info("webhook_malformed", kind=kind.value, problem=exc.problem)
            return "malformed", web.Response(status=400, text=f"{exc.problem}\n")
        started = time.monotonic()
        try:
            await self._handoff.publish(messages)
        except HandoffError as exc:
            log.warning("webhook_handoff_failed", kind=kind.value, failed=exc.failed, reason=exc.reason)
            return "unavailable", web.Response(status=503, text="try again\n")
        self._metrics.handoff_seconds.observe(time.monotonic() - started)
        self._count(messages)
        if kind is RequestKind.TWILIO_INBOUND:
            return "accepted", web.Response(text=EMPTY_TWIML, content_type="text/xml")
        return "accepted", web.Response(text="ok\n")

    def _parse(self, kind: RequestKind, body: bytes, form: Mapping[str, str], query: Mapping[str, str],
               now: datetime) -> list[FeedbackMessage]:
        match kind:
            case RequestKind.SENDGRID_EVENTS:
                return sendgrid_events(body, self._hasher)
            case RequestKind.TWILIO_STATUS:
                found = twilio_status(form, query, now, self._hasher)
            case RequestKind.TWILIO_INBOUND:
                return twilio_inbound(form, now, self._hasher)
        return [found] if found is not None else []

    def _count(self, messages: list[FeedbackMessage]) -> None:
        for message in messages:
            if message.report is not None:
                report = message.report.report
                channel = report.channel if report.channel in _CHANNELS else "other"
                self._metrics.reports.labels(channel, report.provider, report.outcome.value).inc()
            elif message.keyword is not None:
                self._metrics.keywords.labels(message.keyword.channel, message.keyword.action.value).inc()
            elif message.inbound is not None:
                self._metrics.whatsapp_inbound.inc()
