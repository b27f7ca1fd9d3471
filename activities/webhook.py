"""The webhook activity: one HTTP call to another system for a journey's ``webhook`` step.

An attempt renders the URL and body templates over the journey's context, refuses a host outside
the allow-list (``EVENTFLOW_WEBHOOK_ALLOWED_HOSTS``) or a scheme other than http(s), resolves the
step's secret headers by name (a file in ``EVENTFLOW_WEBHOOK_SECRETS_DIR``, else a
``WEBHOOK_SECRET_<NAME>`` variable), and sends the request with an ``Idempotency-Key`` header
that is the same on every attempt (workflow id and step id), so a receiver that honours it acts
once however often Temporal retries. Redirects are not followed (they could leave the
allow-list). The response is read up to the step's size limit and decoded as JSON.

Failures become ``ApplicationError`` s: 5xx, 408, 429 and network errors are retryable (429 with
its ``Retry-After``); other 4xx, 3xx, a refused host, a missing Secret, a template that does not
render, an oversized or non-JSON response are final (``non_retryable``). Neither the response
body nor any header is ever logged, nor put into an error message; the Secrets never leave the
worker (the activity input names them only).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import parse_retry_after
from activities.rendering import TemplateRenderError, render_async
from core.settings import WebhookStepSettings, webhook_secret_environ

WEBHOOK_CALL = "webhook_call"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Statuses worth another attempt (besides network errors and 5xx).
_RETRYABLE_STATUSES = frozenset({408, 429})


class WebhookErrorType:
    """The ``ApplicationError`` types of a failed webhook call (`PERMANENT` ones are never retried)."""

    HOST_NOT_ALLOWED = "WebhookHostNotAllowed"
    BAD_URL = "WebhookBadUrl"
    SECRET_MISSING = "WebhookSecretMissing"
    REJECTED = "WebhookRejected"
    RESPONSE_TOO_LARGE = "WebhookResponseTooLarge"
    RESPONSE_NOT_JSON = "WebhookResponseNotJson"
    BAD_RESPONSE = "WebhookBadResponse"
    TEMPLATE = "TemplateRenderError"
    UNAVAILABLE = "WebhookUnavailable"
    PERMANENT: tuple[str, ...] = (HOST_NOT_ALLOWED, BAD_URL, SECRET_MISSING, REJECTED, RESPONSE_TOO_LARGE,
                                  RESPONSE_NOT_JSON, BAD_RESPONSE, TEMPLATE)


@dataclass(frozen=True)
class WebhookCallInput:
    """One webhook step's call, as the workflow schedules it (no Secret values, only their names).

    Attributes:
        idempotency_key: sent as ``Idempotency-Key``; the same on every attempt.
        secret_headers: header name -> Secret name.
        context: the journey's context the URL and body templates render over.
        expect_json: the step saves the response, so it must be JSON.
    """

    idempotency_key: str
    workflow_id: str
    journey_id: str
    step_id: str
    method: str
    url_template: str
    context: dict[str, Any]
    secret_headers: dict[str, str] = field(default_factory=dict)
    body_template: str | None = None
    timeout_seconds: float = 10.0
    max_response_bytes: int = 65536
    expect_json: bool = False


@dataclass(frozen=True)
class WebhookCallResult:
    """The response: its status and, when it had a body, its JSON (None for an empty body)."""

    status_code: int
    data: Any = None


def host_allowed(url: str, allowed_hosts: Collection[str]) -> bool:
    """Whether ``url`` is http(s) to a host in ``allowed_hosts`` (exact, case-insensitive names)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in {h.lower() for h in allowed_hosts}


class WebhookSecrets:
    """Resolves Secrets by name: a file in ``folder`` first, then the ``WEBHOOK_SECRET_*`` variables."""

    def __init__(self, folder: Path | None, variables: Mapping[str, SecretStr]) -> None:
        self._folder = folder
        self._variables = dict(variables)

    async def resolve(self, name: str) -> str | None:
        if self._folder is not None:
            path = self._folder / name
            text = await asyncio.to_thread(_read_secret, path)
            if text is not None:
                return text
        value = self._variables.get(name)
        return value.get_secret_value() if value is not None else None


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _port_ok(parts: SplitResult) -> bool:
    try:
        return parts.port is None or 0 < parts.port  # an out-of-range port raises ValueError
    except ValueError:
        return False


def _final(message: str, error_type: str) -> ApplicationError:
    return ApplicationError(message, type=error_type, non_retryable=True)


class WebhookActivities:
    """The webhook activity bound to an allow-list, the Secrets and one HTTP client."""

    def __init__(self, allowed_hosts: Collection[str], secrets: WebhookSecrets,
                 client: httpx.AsyncClient | None = None) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._secrets = secrets
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    @classmethod
    def from_settings(cls, settings: WebhookStepSettings) -> WebhookActivities:
        return cls(settings.allowed_hosts, WebhookSecrets(settings.secrets_dir, webhook_secret_environ()))

    @activity.defn(name=WEBHOOK_CALL)
    async def call_webhook(self, call: WebhookCallInput) -> WebhookCallResult:
        """Makes the call once; Temporal's retry policy (the step's) repeats retryable failures."""
        url, body = await self._render(call)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _port_ok(parts):
            raise _final(f"webhook {call.step_id}: the URL is not an http(s) URL with a host", WebhookErrorType.BAD_URL)
        if not host_allowed(url, self._allowed):
            raise _final(f"webhook {call.step_id}: host {parts.hostname!r} is not in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS",
                         WebhookErrorType.HOST_NOT_ALLOWED)
        headers = {IDEMPOTENCY_HEADER: call.idempotency_key, "User-Agent": "eventflow-webhook",
                   "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for header, secret in call.secret_headers.items():
            value = await self._secrets.resolve(secret)
            if value is None:
                raise _final(f"webhook {call.step_id}: secret {secret!r} is not configured in the worker",
                             WebhookErrorType.SECRET_MISSING)
            headers[header] = value
        status, raw = await self._send(call, url, headers, body, parts.hostname)
        activity.logger.info("webhook called journey=%s step=%s host=%s status=%d bytes=%d", call.journey_id,
                             call.step_id, parts.hostname, status, len(raw))
        return WebhookCallResult(status, self._decode(call, raw))

    async def _render(self, call: WebhookCallInput) -> tuple[str, str | None]:
        try:
            url = (await render_async(f"webhook {call.step_id} url", call.url_template, call.context)).strip()
            body = (None if call.body_template is None
                    else await render_async(f"webhook {call.step_id} body", call.body_template, call.context))
        except TemplateRenderError as exc:
            raise _final(f"webhook {call.step_id}: {exc.problem}", WebhookErrorType.TEMPLATE) from exc
        return url, body

    async def _send(self, call: WebhookCallInput, url: str, headers: dict[str, str], body: str | None,
                    host: str) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(call.timeout_seconds):
                async with self._client.stream(call.method, url, headers=headers, content=body,
                                               timeout=call.timeout_seconds) as response:
                    status = response.status_code
                    if status >= 300:
                        raise self._status_error(call, status, host, response.headers.get("Retry-After"))
                    return status, await self._read(call, response)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _final(f"webhook {call.step_id}: the URL is not usable ({type(exc).__name__})",
                         WebhookErrorType.BAD_URL) from None
        except httpx.DecodingError:
            raise _final(f"webhook {call.step_id}: {host} sent a body that cannot be decoded",
                         WebhookErrorType.BAD_RESPONSE) from None
        except (httpx.TransportError, TimeoutError) as exc:
            raise ApplicationError(f"webhook {call.step_id}: {host} did not answer ({type(exc).__name__})",
                                   type=WebhookErrorType.UNAVAILABLE) from None

    @staticmethod
    def _status_error(call: WebhookCallInput, status: int, host: str, retry_after: str | None) -> ApplicationError:
        message = f"webhook {call.step_id}: {host} answered HTTP {status}"
        if status >= 500 or status in _RETRYABLE_STATUSES:
            delay = parse_retry_after(retry_after) if status == 429 else None
            return ApplicationError(message, type=WebhookErrorType.UNAVAILABLE,
                                    next_retry_delay=timedelta(seconds=delay) if delay else None)
        return _final(message, WebhookErrorType.REJECTED)

    @staticmethod
    async def _read(call: WebhookCallInput, response: httpx.Response) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > call.max_response_bytes:
            raise _final(f"webhook {call.step_id}: response of {declared} bytes is over the limit of "
                         f"{call.max_response_bytes}", WebhookErrorType.RESPONSE_TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > call.max_response_bytes:
                raise _final(f"webhook {call.step_id}: response is over the limit of {call.max_response_bytes} "
                             "bytes", WebhookErrorType.RESPONSE_TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _decode(call: WebhookCallInput, raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            if call.expect_json:
                raise _final(f"webhook {call.step_id}: the response is not JSON", WebhookErrorType.RESPONSE_NOT_JSON
                             ) from None
            return None
