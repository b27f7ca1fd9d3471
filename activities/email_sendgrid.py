"""Email through SendGrid's v3 Mail Send API: one JSON POST per message, on kept-alive connections.

The official ``sendgrid`` SDK sends through urllib, which opens a new connection (against the real
API, a TLS handshake) for every message. The channel speaks the same protocol on one pooled
``httpx.Client`` instead, whose connections stay open between messages. Its calls block, so each
runs in a worker thread, with the socket timeouts applying to each read and write as before (a
process frozen past a timeout still reads the reply that arrived meanwhile, rather than calling the
send uncertain). The SDK still verifies the Event Webhook's signatures. The idempotency key,
customer, workflow and step travel as ``custom_args`` (SendGrid echoes them in every Event Webhook
event, which is how `eventflow webhooks` finds the send a report is about) and the key as a
message header, so a message can be traced to its journey step; SendGrid itself does not deduplicate on it, which is
why the ledger exists.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from activities.channels import OutgoingMessage
from activities.errors import (
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RateLimitedError,
    RetryableSendError,
    parse_retry_after,
)
from activities.notifications import SendResult
from activities.outcomes import SendStatus
from activities.ratelimit import TokenBucket

PROVIDER = "sendgrid"
IDEMPOTENCY_HEADER = "X-Eventflow-Idempotency-Key"
MAIL_SEND_PATH = "/v3/mail/send"
#: An idle connection is closed by us after this long, well inside any server's own idle timeout, so a
#: message is not written onto a connection the server is closing at that moment.
KEEPALIVE_SECONDS = 4.0


@dataclass(frozen=True)
class SendGridConfig:
    """SendGrid account settings.

    Attributes:
        api_key: the API key (from ``SENDGRID_API_KEY`` or the file ``SENDGRID_API_KEY_FILE``).
        from_email, from_name: the verified sender.
        base_url: API host; ``https://api.eu.sendgrid.com`` for EU regional subusers, a local server in tests.
        timeout_seconds: per-request timeout.
    """

    api_key: str
    from_email: str
    from_name: str = ""
    base_url: str = "https://api.sendgrid.com"
    timeout_seconds: float = 10.0


class SendGridChannel:
    """The ``email`` channel backed by SendGrid."""

    name = PROVIDER
    reconciles = False

    def __init__(self, config: SendGridConfig, limiter: TokenBucket | None = None) -> None:
        self._config = config
        self._limiter = limiter
        # Proxies from the environment are never handed the API key.
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"), timeout=config.timeout_seconds, trust_env=False,
            headers={"Authorization": f"Bearer {config.api_key}", "User-Agent": "eventflow"},
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                keepalive_expiry=KEEPALIVE_SECONDS))

    @property
    def limiter(self) -> TokenBucket | None:
        return self._limiter

    @property
    def call_timeout_seconds(self) -> float:
        return self._config.timeout_seconds

    def _request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        sender: dict[str, str] = {"email": message.sender or self._config.from_email}
        if self._config.from_name:
            sender["name"] = self._config.from_name
        personalization: dict[str, Any] = {"to": [{"email": message.to}]}
        body: dict[str, Any] = {
            "personalizations": [personalization],
            "from": sender,
            "custom_args": custom_args(message),
            # List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) travel as plain headers.
            "headers": {**message.headers, IDEMPOTENCY_HEADER: message.idempotency_key},
        }
        if message.provider_template_id:
            body["template_id"] = message.provider_template_id
            personalization["dynamic_template_data"] = dict(message.template_variables)
        else:
            body["subject"] = message.subject or ""
            # SendGrid wants text/plain first, then text/html: the order of a multipart/alternative.
            body["content"] = [{"type": "text/plain", "value": message.body}]
            if message.html:
                body["content"].append({"type": "text/html", "value": message.html})
        return body

    def _send_blocking(self, body: dict[str, Any]) -> SendResult:
        try:
            response = self._client.post(MAIL_SEND_PATH, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection carried the message: it cannot have been sent.
            raise RetryableSendError(f"sendgrid unreachable: {type(exc).__name__}", provider=PROVIDER,
                                     delivery_uncertain=False) from exc
        except httpx.TimeoutException as exc:
            raise RetryableSendError("sendgrid timed out", provider=PROVIDER, delivery_uncertain=True) from exc
        except httpx.TransportError as exc:
            # The message may have been read before the connection broke.
            raise RetryableSendError(f"sendgrid connection failed: {type(exc).__name__}", provider=PROVIDER,
                                     delivery_uncertain=True) from exc
        if not response.is_success:
            raise _classify(response.status_code, response.reason_phrase, response.headers, response.content)
        message_id = _header(response.headers, "X-Message-Id")
        return SendResult(status=SendStatus.SENT, provider=PROVIDER, provider_message_id=message_id)

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        return await asyncio.to_thread(self._send_blocking, self._request_body(message))

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        # Mail Send has no lookup by our key (the Email Activity API is a paid add-on and lags by
        # minutes), so an interrupted attempt is sent again: see docs/architecture.md, ADR-7.
        return None


def custom_args(message: OutgoingMessage) -> dict[str, str]:
    """What SendGrid echoes back with each event about ``message`` (strings only; empty ones left out)."""
    args = {"idempotency_key": message.idempotency_key, "customer_id": message.customer_id,
            "workflow_id": message.workflow_id, "step_id": message.step_id, "channel": message.channel}
    return {name: value for name, value in args.items() if value}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return str(value) if value else None


def _error_fields(body: bytes | str | None) -> list[str]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return []
    errors = parsed.get("errors", []) if isinstance(parsed, dict) else []
    return [str(e.get("field") or "") + " " + str(e.get("message") or "") for e in errors if isinstance(e, dict)]


def _classify(status: int, reason: str, headers: Mapping[str, str], body: bytes) -> Exception:
    details = "; ".join(_error_fields(body)) or reason
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        reset = _header(headers, "X-RateLimit-Reset")
        if retry_after is None and reset and reset.isdigit():
            retry_after = max(0.0, int(reset) - time.time())
        return RateLimitedError("sendgrid rate limit", provider=PROVIDER, status=status,
                                retry_after_seconds=retry_after)
    if status >= 500 or status == 408:
        return RetryableSendError(f"sendgrid {status}", provider=PROVIDER, status=status,
                                  retry_after_seconds=parse_retry_after(_header(headers, "Retry-After")))
    if status in (401, 403):
        return ProviderAuthError(f"sendgrid refused the credentials ({status})", provider=PROVIDER, status=status)
    lowered = details.lower()
    if "personalizations" in lowered and ("to" in lowered or "email" in lowered) or "does not contain a valid address" in lowered:
        return InvalidAddressError(f"sendgrid rejected the recipient: {details}", provider=PROVIDER, status=status)
    return PermanentSendError(f"sendgrid rejected the message ({status}): {details}", provider=PROVIDER,
                              status=status)
