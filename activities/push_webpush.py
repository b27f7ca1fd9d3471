"""Browser push: RFC 8030 Web Push, payloads encrypted per RFC 8291 (aes128gcm), VAPID per RFC 8292.

The encryption and the VAPID signature come from ``pywebpush`` (its ``WebPusher.encode``) and
``py_vapid`` (``Vapid02.sign``); the request goes out on ``httpx`` so the call is asynchronous and
timed like every other provider's. The payload is JSON (``title``, ``body``, ``link``, ``data``,
``tag``) for the site's service worker to show. Push services answer 201 when they took the
message; 404 and 410 mean the subscription is gone (`DeviceGoneError`, the device is removed).
Web Push has no way to ask whether an earlier attempt's message arrived (``reconciles`` is false).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02
from pywebpush import WebPusher

from activities.channels import OutgoingMessage
from activities.errors import (
    DeviceGoneError,
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RateLimitedError,
    RetryableSendError,
    parse_retry_after,
)
from activities.notifications import SendResult
from activities.outcomes import SendStatus
from activities.push import InvalidDevice, WebPushSubscription
from activities.ratelimit import TokenBucket

PROVIDER = "webpush"
#: RFC 8291 leaves 3993 bytes of plaintext in one 4096-byte record (with the 86-byte header and padding delimiter).
MAX_PAYLOAD_BYTES = 3993
#: VAPID tokens live at most 24 hours (RFC 8292 2); a fresh one per call stays well inside that.
_TOKEN_LIFETIME_SECONDS = 12 * 3600


@dataclass(frozen=True)
class WebPushConfig:
    """The application server's VAPID identity and the message defaults.

    Attributes:
        vapid_private_key_pem: the P-256 private key (PEM) whose public key browsers subscribed with.
        vapid_subject: ``mailto:`` or ``https:`` contact for push service operators.
        ttl_seconds: how long the push service keeps the message for an offline browser.
        timeout_seconds: per-request timeout.
    """

    vapid_private_key_pem: bytes
    vapid_subject: str
    ttl_seconds: int = 86400
    timeout_seconds: float = 10.0


def payload(message: OutgoingMessage) -> bytes:
    """The JSON the service worker receives; ``tag`` (from the send's key) lets it collapse a repeat."""
    tag = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:16]
    document = {"title": message.subject or "", "body": message.body, "link": message.link,
                "data": dict(message.data), "tag": tag}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class WebPushChannel:
    """The ``webpush`` channel: one encrypted, VAPID-signed POST per browser subscription."""

    name = PROVIDER
    reconciles = False

    def __init__(self, config: WebPushConfig, limiter: TokenBucket | None = None) -> None:
        self._config = config
        self._limiter = limiter
        self._vapid = Vapid02.from_pem(config.vapid_private_key_pem)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)

    @property
    def limiter(self) -> TokenBucket | None:
        return self._limiter

    @property
    def call_timeout_seconds(self) -> float:
        return self._config.timeout_seconds * 2

    def _request(self, message: OutgoingMessage) -> tuple[str, bytes, dict[str, str]]:
        """Endpoint, encrypted body and headers (CPU work: ECDH, HKDF, AES-GCM, ECDSA)."""
        try:
            subscription = WebPushSubscription.parse(message.to)
        except InvalidDevice as exc:
            raise InvalidAddressError(str(exc), provider=PROVIDER) from None
        plaintext = payload(message)
        if len(plaintext) > MAX_PAYLOAD_BYTES:
            raise PermanentSendError(f"web push payload is {len(plaintext)} bytes, above {MAX_PAYLOAD_BYTES}",
                                     provider=PROVIDER, status=413)
        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        try:
            body = WebPusher(info).encode(plaintext, content_encoding="aes128gcm")["body"]
        except Exception as exc:  # noqa: BLE001 - the library raises bare errors for malformed keys
            raise InvalidAddressError(f"web push subscription keys unusable: {type(exc).__name__}",
                                      provider=PROVIDER) from None
        parts = urlsplit(subscription.endpoint)
        claims = {"aud": f"{parts.scheme}://{parts.netloc}", "sub": self._config.vapid_subject,
                  "exp": int(time.time()) + _TOKEN_LIFETIME_SECONDS}
        headers = {str(k): str(v) for k, v in self._vapid.sign(claims).items()}
        headers.update({"TTL": str(self._config.ttl_seconds), "Content-Encoding": "aes128gcm",
                        "Content-Type": "application/octet-stream", "Urgency": "normal"})
        return subscription.endpoint, bytes(body), headers

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        endpoint, body, headers = await asyncio.to_thread(self._request, message)
        try:
            response = await self._client.post(endpoint, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            # A read timeout may follow a message the push service took.
            raise RetryableSendError("web push timed out", provider=PROVIDER,
                                     delivery_uncertain=not isinstance(exc, httpx.ConnectTimeout)) from None
        except httpx.HTTPError as exc:
            raise RetryableSendError(f"web push connection failed: {type(exc).__name__}", provider=PROVIDER) from None
        status = response.status_code
        if status in (200, 201, 202):
            return SendResult(SendStatus.SENT, PROVIDER, response.headers.get("Location"))
        raise _classify(status, response.headers.get("Retry-After"))

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


def _classify(status: int, retry_after: str | None) -> PermanentSendError | RetryableSendError:
    """RFC 8030 5 and 8292 4: 404/410 gone, 401/403 VAPID refused, 413 too large, 429 slow down."""
    if status in (404, 410):
        return DeviceGoneError(f"web push subscription gone ({status})", provider=PROVIDER, status=status)
    if status in (401, 403):
        return ProviderAuthError(f"web push service refused the VAPID signature ({status})", provider=PROVIDER,
                                 status=status)
    if status == 429:
        return RateLimitedError("web push service rate limited", provider=PROVIDER, status=status,
                                retry_after_seconds=parse_retry_after(retry_after))
    if status >= 500:
        return RetryableSendError(f"web push service unavailable ({status})", provider=PROVIDER, status=status,
                                  retry_after_seconds=parse_retry_after(retry_after))
    return PermanentSendError(f"web push service rejected the message ({status})", provider=PROVIDER, status=status)
