"""SMS and WhatsApp through Twilio's Messages API with the official ``twilio`` SDK.

WhatsApp uses ``whatsapp:`` addresses; outside the 24-hour session window WhatsApp only accepts
approved templates, sent through the Content API (``content_sid`` plus ``content_variables``).
Twilio has no idempotency key, so an attempt interrupted by a crash is reconciled by listing the
recipient's recent messages before sending again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from activities.channels import OutgoingMessage
from activities.errors import (
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RateLimitedError,
    RecipientUnsubscribedError,
    RetryableSendError,
    parse_retry_after,
)
from activities.notifications import SendResult
from activities.outcomes import SendStatus
from activities.ratelimit import TokenBucket

PROVIDER = "twilio"
DEFAULT_BASE_URL = "https://api.twilio.com"

#: Twilio error codes meaning the recipient opted out (a STOP reply) or cannot be reached at that address.
UNSUBSCRIBED_CODES = frozenset({21610})
INVALID_ADDRESS_CODES = frozenset({21211, 21212, 21214, 21217, 21219, 21401, 21407, 21408, 21421, 21612, 21614,
                                   63003, 63024})
RATE_LIMIT_CODES = frozenset({20429, 14107})


@dataclass(frozen=True)
class TwilioConfig:
    """Twilio account settings.

    Attributes:
        account_sid, auth_token: credentials (the token from ``TWILIO_AUTH_TOKEN`` or ``TWILIO_AUTH_TOKEN_FILE``).
        sms_from, whatsapp_from: sender numbers (``whatsapp:`` is added when missing).
        messaging_service_sid: sends through a Messaging Service instead of a from number, when set.
        base_url: API base URL override (a local server in tests); ``region``/``edge`` pick Twilio's
            regional endpoints the SDK's way.
        timeout_seconds: per-request timeout.
        status_callback_base_url: the externally visible base URL of `eventflow webhooks`; when
            set, every message asks Twilio for status callbacks at ``<base>/twilio/status`` with
            the send's idempotency key, customer, workflow, step and channel as query parameters.
    """

    account_sid: str
    auth_token: str
    sms_from: str = ""
    whatsapp_from: str = ""
    messaging_service_sid: str = ""
    base_url: str = ""
    region: str = ""
    edge: str = ""
    timeout_seconds: float = 10.0
    status_callback_base_url: str = ""


#: The webhook service's path for message status callbacks (see eventflow/webhooks).
STATUS_CALLBACK_PATH = "/twilio/status"


def status_callback_url(base_url: str, message: OutgoingMessage) -> str:
    """The status-callback URL of ``message``: the webhook service's, with the send named in the query."""
    query = {"k": message.idempotency_key, "c": message.customer_id, "w": message.workflow_id,
             "s": message.step_id, "ch": message.channel}
    return f"{base_url.rstrip('/')}{STATUS_CALLBACK_PATH}?{urllib.parse.urlencode(query)}"


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]  # the Twilio SDK ships no types
    """The SDK's HTTP client, remembering each thread's last response (for ``Retry-After``)."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(timeout=timeout_seconds)
        self._local = threading.local()

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        self._local.response = None
        response = super().request(method, url, params=params, data=data, headers=headers, auth=auth,
                                   timeout=timeout, allow_redirects=allow_redirects)
        self._local.response = response
        return response

    def thread_response(self) -> Response | None:
        return getattr(self._local, "response", None)


class TwilioClient:
    """One SDK client per account, shared by the SMS and WhatsApp channels (thread-safe per call)."""

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        self.http = _HttpClient(config.timeout_seconds)
        self.sdk = Client(config.account_sid, config.auth_token, http_client=self.http,
                          region=config.region or None, edge=config.edge or None)
        if config.base_url:
            # Every Messages call goes through the ``api`` domain; its base URL is the documented seam.
            self.sdk.api.base_url = config.base_url.rstrip("/")


class TwilioChannel:
    """The ``sms`` or ``whatsapp`` channel backed by Twilio Programmable Messaging."""

    name = PROVIDER
    reconciles = True

    def __init__(self, client: TwilioClient, kind: str, limiter: TokenBucket | None = None) -> None:
        if kind not in ("sms", "whatsapp"):
            raise ValueError(f"unknown Twilio channel kind {kind!r}")
        self._client = client
        self._kind = kind
        self._limiter = limiter

    @property
    def limiter(self) -> TokenBucket | None:
        return self._limiter

    @property
    def call_timeout_seconds(self) -> float:
        return self._client.config.timeout_seconds

    def _address(self, raw: str) -> str:
        if self._kind == "whatsapp" and not raw.startswith("whatsapp:"):
            return f"whatsapp:{raw}"
        return raw

    def _params(self, message: OutgoingMessage) -> dict[str, Any]:
        config = self._client.config
        params: dict[str, Any] = {"to": self._address(message.to)}
        sender = message.sender or (config.whatsapp_from if self._kind == "whatsapp" else config.sms_from)
        if config.messaging_service_sid and not message.sender:
            params["messaging_service_sid"] = config.messaging_service_sid
        else:
            params["from_"] = self._address(sender)
        if message.provider_template_id:
            params["content_sid"] = message.provider_template_id
            params["content_variables"] = json.dumps(dict(message.template_variables), sort_keys=True)
        else:
            params["body"] = message.body
        if config.status_callback_base_url:
            params["status_callback"] = status_callback_url(config.status_callback_base_url, message)
        return params

    def _send_blocking(self, params: Mapping[str, Any]) -> SendResult:
        try:
            created = self._client.sdk.messages.create(**params)
        except TwilioRestException as exc:
            response = self._client.http.thread_response()
            raise _classify(exc, response.headers if response is not None else {}) from exc
        except requests.Timeout as exc:
            raise RetryableSendError("twilio timed out", provider=PROVIDER,
                                     delivery_uncertain=not isinstance(exc, requests.ConnectTimeout)) from exc
        except requests.ConnectionError as exc:
            raise RetryableSendError("twilio unreachable", provider=PROVIDER, delivery_uncertain=True) from exc
        return SendResult(status=SendStatus.SENT, provider=PROVIDER, provider_message_id=created.sid)

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        return await asyncio.to_thread(self._send_blocking, self._params(message))

    def _reconcile_blocking(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        params = self._params(message)
        since = datetime.fromtimestamp(since_epoch_seconds, UTC) - timedelta(minutes=5)
        try:
            recent = self._client.sdk.messages.list(to=params["to"], date_sent_after=since, limit=50)
        except (TwilioRestException, requests.RequestException) as exc:
            raise RetryableSendError("twilio message lookup failed", provider=PROVIDER,
                                     delivery_uncertain=True) from exc
        for found in recent:
            created = found.date_created
            if created is not None and created.timestamp() < since.timestamp():
                continue
            if "body" in params and (found.body or "") != params["body"]:
                continue
            if "from_" in params and found.from_ and found.from_ != params["from_"]:
                continue
            return SendResult(status=SendStatus.DUPLICATE, provider=PROVIDER, provider_message_id=found.sid)
        return None

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return await asyncio.to_thread(self._reconcile_blocking, message, since_epoch_seconds)


def _classify(exc: TwilioRestException, headers: Mapping[str, str]) -> Exception:
    status, code = int(exc.status), exc.code
    retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
    text = f"twilio {status} code {code}"
    if status == 429 or code in RATE_LIMIT_CODES:
        return RateLimitedError(text, provider=PROVIDER, status=status, provider_code=code,
                                retry_after_seconds=retry_after)
    if status >= 500:
        return RetryableSendError(text, provider=PROVIDER, status=status, provider_code=code,
                                  retry_after_seconds=retry_after)
    if code in UNSUBSCRIBED_CODES:
        return RecipientUnsubscribedError(f"{text}: recipient unsubscribed", provider=PROVIDER, status=status,
                                          provider_code=code)
    if code in INVALID_ADDRESS_CODES:
        return InvalidAddressError(f"{text}: invalid recipient", provider=PROVIDER, status=status,
                                   provider_code=code)
    if status in (401, 403):
        return ProviderAuthError(f"{text}: credentials refused", provider=PROVIDER, status=status,
                                 provider_code=code)
    return PermanentSendError(f"{text}: rejected", provider=PROVIDER, status=status, provider_code=code)
