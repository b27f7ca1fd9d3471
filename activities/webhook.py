"""The webhook activity: one HTTP call to another system for a journey's ``webhook`` step.

An attempt renders the URL and body templates over the journey's context, refuses a host and port
outside the allow-list (``EVENTFLOW_WEBHOOK_ALLOWED_HOSTS``) or a scheme other than http(s), resolves
the step's secret headers by name (a file in ``EVENTFLOW_WEBHOOK_SECRETS_DIR``, else a
``WEBHOOK_SECRET_<NAME>`` variable), and sends the request with an ``Idempotency-Key`` header
that is the same on every attempt (workflow id and step id), so a receiver that honours it acts
once however often Temporal retries. Redirects are not followed (they could leave the
allow-list). The response is read up to the step's size limit and, when the step saves it, decoded as JSON.

The journey's context is event data, which anyone who can publish an event controls, so nothing in
it may change where the request goes or what it says beyond the values the step puts in:

- every ``{{ value }}`` in the URL is encoded as one path segment (`Interpolation.URL_SEGMENT`), so
  ``../../admin?x=`` stays inside its segment, and a rendered path with a ``.``/``..`` segment is
  refused even percent-encoded (servers that decode before normalising would climb);
- a body given as a mapping is rendered leaf by leaf and serialised with ``json.dumps``; a body
  given as one template string (the older form) has its values JSON-escaped and must parse into
  the same keys and nesting it has with every value taken out, so a value cannot add a key;
- the host name is resolved once per attempt, every address must be public (loopback only with
  ``EVENTFLOW_WEBHOOK_ALLOW_LOOPBACK``, for tests), and the request connects to the checked address
  (keeping the ``Host`` header and TLS server name), so DNS cannot switch it after the check;
- a Secret goes only to the hosts ``EVENTFLOW_WEBHOOK_SECRET_HOSTS`` lists for it;
- a response kept with ``save_as`` is at most ``EVENTFLOW_WEBHOOK_MAX_SAVED_BYTES`` of JSON (it
  travels in the workflow history and every later activity input); a larger one fails the call.

Failures become ``ApplicationError`` s: 5xx, 408, 429 and network errors are retryable (429 with
its ``Retry-After``); other 4xx, 3xx, a refused host, a missing Secret, a template that does not
render, an oversized or non-JSON response are final (``non_retryable``); so are a refused address,
a Secret not bound to the host, a body a value would reshape and a response too large to save. A
name that does not resolve is retryable. Neither the response
body nor any header is ever logged, nor put into an error message; the Secrets never leave the
worker (the activity input names them only).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import parse_retry_after
from activities.rendering import Interpolation, TemplateRenderError, render_async
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
    ADDRESS_NOT_ALLOWED = "WebhookAddressNotAllowed"
    SECRET_NOT_ALLOWED = "WebhookSecretNotAllowed"
    BAD_BODY = "WebhookBadBody"
    SAVED_TOO_LARGE = "WebhookSavedTooLarge"
    PERMANENT: tuple[str, ...] = (HOST_NOT_ALLOWED, BAD_URL, SECRET_MISSING, REJECTED, RESPONSE_TOO_LARGE,
                                  RESPONSE_NOT_JSON, BAD_RESPONSE, TEMPLATE, ADDRESS_NOT_ALLOWED,
                                  SECRET_NOT_ALLOWED, BAD_BODY, SAVED_TOO_LARGE)


@dataclass(frozen=True)
class WebhookCallInput:
    """One webhook step's call, as the workflow schedules it (no Secret values, only their names).

    Attributes:
        idempotency_key: sent as ``Idempotency-Key``; the same on every attempt.
        secret_headers: header name -> Secret name.
        context: the journey's context the URL and body templates render over.
        expect_json: the step saves the response, so it must be JSON.
        body_template: a JSON body as one template string (the older form).
        body_document: a JSON body as data whose string leaves are templates (rendered one by one).
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
    body_document: dict[str, Any] | list[Any] | None = None


@dataclass(frozen=True)
class WebhookCallResult:
    """The response: its status and, when it had a body, its JSON (None for an empty body)."""

    status_code: int
    data: Any = None


_DEFAULT_PORTS = {"https": 443, "http": 80}


class HostList:
    """Hosts, each with the port it may be called on: ``host`` (443 for https, 80 for http) or ``host:port``.

    The shape of ``EVENTFLOW_WEBHOOK_ALLOWED_HOSTS`` and of each Secret's hosts in
    ``EVENTFLOW_WEBHOOK_SECRET_HOSTS``; names match exactly, case-insensitively.
    """

    def __init__(self, entries: Collection[str]) -> None:
        self.entries = tuple(entries)
        self._rules: set[tuple[str, int | None]] = set()
        for entry in entries:
            parts = urlsplit("//" + entry.strip())
            try:
                port = parts.port
            except ValueError:
                raise ValueError(f"{entry!r} is not host or host:port") from None
            if not parts.hostname or parts.path or parts.username:
                raise ValueError(f"{entry!r} is not host or host:port")
            self._rules.add((parts.hostname.lower(), port))

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether ``host`` on ``port`` (None: the scheme's default) is listed."""
        default = _DEFAULT_PORTS.get(scheme)
        effective = port if port is not None else default
        host = host.lower()
        return (host, effective) in self._rules or (effective == default and (host, None) in self._rules)

    def allows_url(self, url: str) -> bool:
        """Whether ``url`` is http(s) to a listed host and port."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not _port_ok(parts):
            return False
        return self.allows(parts.scheme, parts.hostname, parts.port)


def host_allowed(url: str, allowed_hosts: Collection[str]) -> bool:
    """Whether ``url`` is http(s) to a host and port in ``allowed_hosts`` (`HostList` entries)."""
    return HostList(allowed_hosts).allows_url(url)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves a host name to its addresses (the system resolver by default; tests inject one).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, from the system resolver."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def address_problem(address: Address, *, allow_loopback: bool = False) -> str | None:
    """Why a webhook may not connect to ``address`` (None when it may): only public addresses are allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def _dot_segment(path: str) -> bool:
    # Encoded dots included: a server that decodes before it normalises would still climb.
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


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


def _shape(document: Any) -> Any:
    """Keys and nesting of a JSON document, every leaf alike."""
    if isinstance(document, dict):
        return {key: _shape(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_shape(value) for value in document]
    return None


class WebhookActivities:
    """The webhook activity bound to an allow-list, the Secrets (each with its hosts) and one HTTP client.

    Args:
        secret_hosts: Secret name -> the hosts (`HostList` entries) it may be sent to; others never are.
        max_saved_bytes: the largest response (compact JSON) a step with ``save_as`` may keep.
        allow_loopback: tests and development only: loopback addresses may be called.
        resolver: resolves host names (the system's by default).
    """

    def __init__(self, allowed_hosts: Collection[str], secrets: WebhookSecrets,
                 client: httpx.AsyncClient | None = None, *,
                 secret_hosts: Mapping[str, Collection[str]] | None = None, max_saved_bytes: int = 16384,
                 allow_loopback: bool = False, resolver: Resolver = system_resolver) -> None:
        self._allowed = HostList(allowed_hosts)
        self._secrets = secrets
        self._secret_hosts = {name.lower(): HostList(hosts) for name, hosts in (secret_hosts or {}).items()}
        self._max_saved_bytes = max_saved_bytes
        self._allow_loopback = allow_loopback
        self._resolve = resolver
        # Proxies from the environment would connect on our behalf, to an address we never checked.
        self._client = client or httpx.AsyncClient(follow_redirects=False, trust_env=False)

    @classmethod
    def from_settings(cls, settings: WebhookStepSettings) -> WebhookActivities:
        return cls(settings.allowed_hosts, WebhookSecrets(settings.secrets_dir, webhook_secret_environ()),
                   secret_hosts=settings.secret_hosts, max_saved_bytes=settings.max_saved_bytes,
                   allow_loopback=settings.allow_loopback)

    @activity.defn(name=WEBHOOK_CALL)
    async def call_webhook(self, call: WebhookCallInput) -> WebhookCallResult:
        """Makes the call once; Temporal's retry policy (the step's) repeats retryable failures."""
        url, body = await self._render(call)
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not _port_ok(parts) or parts.username \
                or parts.password is not None:
            raise _final(f"webhook {call.step_id}: the URL is not an http(s) URL with a host (and no credentials)",
                         WebhookErrorType.BAD_URL)
        if _dot_segment(parts.path):
            raise _final(f"webhook {call.step_id}: the URL's path has a '.' or '..' segment", WebhookErrorType.BAD_URL)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme]
        if not self._allowed.allows(parts.scheme, host, parts.port):
            raise _final(f"webhook {call.step_id}: host {host!r} on port {port} is not in "
                         "EVENTFLOW_WEBHOOK_ALLOWED_HOSTS", WebhookErrorType.HOST_NOT_ALLOWED)
        headers = {IDEMPOTENCY_HEADER: call.idempotency_key, "User-Agent": "eventflow-webhook",
                   "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for header, secret in call.secret_headers.items():
            bound = self._secret_hosts.get(secret.lower())
            if bound is None or not bound.allows(parts.scheme, host, parts.port):
                raise _final(f"webhook {call.step_id}: secret {secret!r} may not be sent to {host!r} on port {port} "
                             "(EVENTFLOW_WEBHOOK_SECRET_HOSTS)", WebhookErrorType.SECRET_NOT_ALLOWED)
            value = await self._secrets.resolve(secret)
            if value is None:
                raise _final(f"webhook {call.step_id}: secret {secret!r} is not configured in the worker",
                             WebhookErrorType.SECRET_MISSING)
            headers[header] = value
        address = await self._checked_address(call, host, port)
        status, raw = await self._send(call, parts, address, headers, body)
        activity.logger.info("webhook called journey=%s step=%s host=%s status=%d bytes=%d", call.journey_id,
                             call.step_id, host, status, len(raw))
        if not call.expect_json:
            return WebhookCallResult(status)  # nothing keeps the body: the history holds the status only
        data = self._decode(call, raw)
        saved = len(json.dumps(data, separators=(",", ":")).encode())
        if saved > self._max_saved_bytes:
            raise _final(f"webhook {call.step_id}: the response is {saved} bytes of JSON, over the "
                         f"{self._max_saved_bytes} save_as may keep (EVENTFLOW_WEBHOOK_MAX_SAVED_BYTES); "
                         "nothing was saved", WebhookErrorType.SAVED_TOO_LARGE)
        return WebhookCallResult(status, data)

    async def _checked_address(self, call: WebhookCallInput, host: str, port: int) -> Address:
        """The address to connect to: ``host`` resolved once, every address it has checked."""
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self._resolve(host, port)]
        except (OSError, ValueError) as exc:
            raise ApplicationError(f"webhook {call.step_id}: {host} does not resolve ({type(exc).__name__})",
                                   type=WebhookErrorType.UNAVAILABLE) from None
        if not found:
            raise ApplicationError(f"webhook {call.step_id}: {host} has no address", type=WebhookErrorType.UNAVAILABLE)
        for address in found:
            if (problem := address_problem(address, allow_loopback=self._allow_loopback)) is not None:
                raise _final(f"webhook {call.step_id}: {host} resolves to {problem} ({address})",
                             WebhookErrorType.ADDRESS_NOT_ALLOWED)
        return found[0]

    async def _render(self, call: WebhookCallInput) -> tuple[str, str | None]:
        try:
            url = (await render_async(f"webhook {call.step_id} url", call.url_template, call.context,
                                      interpolation=Interpolation.URL_SEGMENT)).strip()
            if call.body_document is not None:
                body: str | None = json.dumps(await self._render_document(call, call.body_document, "body"))
            elif call.body_template is not None:
                body = await self._render_body_template(call, call.body_template)
            else:
                body = None
        except TemplateRenderError as exc:
            raise _final(f"webhook {call.step_id}: {exc.problem}", WebhookErrorType.TEMPLATE) from exc
        return url, body

    async def _render_document(self, call: WebhookCallInput, node: Any, where: str) -> Any:
        """A body given as data: each string leaf rendered on its own; keys and other leaves kept."""
        if isinstance(node, dict):
            return {key: await self._render_document(call, value, f"{where}.{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [await self._render_document(call, value, f"{where}[{i}]") for i, value in enumerate(node)]
        if isinstance(node, str):
            return await render_async(f"webhook {call.step_id} {where}", node, call.context)
        return node

    async def _render_body_template(self, call: WebhookCallInput, source: str) -> str:
        """A body given as one template (the older form): values JSON-escaped, and the shape kept.

        Escaping keeps a value inside the string it is quoted in; a value outside quotes
        (``{"n": {{ n }}}``) could still add keys, so the body must parse into the keys and nesting
        it has with every value replaced by ``0``.
        """
        template_id = f"webhook {call.step_id} body"
        body = await render_async(template_id, source, call.context, interpolation=Interpolation.JSON_STRING)
        shape = await render_async(template_id, source, call.context, interpolation=Interpolation.PLACEHOLDER)
        try:
            same = _shape(json.loads(body)) == _shape(json.loads(shape))
        except ValueError:
            raise _final(f"webhook {call.step_id}: the body is not JSON with the journey's values in it; give the "
                         "body as a mapping (see journeys/README.md)", WebhookErrorType.BAD_BODY) from None
        if not same:
            raise _final(f"webhook {call.step_id}: a value changed the body's keys or nesting; give the body as a "
                         "mapping (see journeys/README.md)", WebhookErrorType.BAD_BODY)
        return body

    async def _send(self, call: WebhookCallInput, parts: SplitResult, address: Address, headers: dict[str, str],
                    body: str | None) -> tuple[int, bytes]:
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        # Connect to the address checked, not the name (DNS could answer differently the second
        # time); the Host header and the TLS server name (certificate check included) stay the name's.
        literal = f"[{address}]" if address.version == 6 else str(address)
        url = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, ""))
        authority = f"[{host}]" if ":" in host else host
        headers = {**headers, "Host": authority if parts.port is None else f"{authority}:{port}"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with asyncio.timeout(call.timeout_seconds):
                async with self._client.stream(call.method, url, headers=headers, content=body,
                                               timeout=call.timeout_seconds, extensions=extensions) as response:
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
