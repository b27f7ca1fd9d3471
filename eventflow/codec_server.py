"""``eventflow codec-server``: Temporal's codec-server HTTP protocol over Eventflow's payload keys.

The Temporal Web UI and CLI (``temporal workflow show --codec-endpoint URL --codec-auth 'Bearer T'``)
send ``POST /decode`` (and ``/encode``) with ``{"payloads": [...]}`` in protobuf JSON and show what
comes back. Routes are served at the root and under a namespace segment (``/{namespace}/decode``);
the namespace (that segment, or the ``X-Namespace`` header) must be the configured one.

Every ``/encode`` and ``/decode`` needs ``Authorization: Bearer <token>``: missing is 401, wrong is
403. CORS answers only the configured Web UI origins; a preflight (``OPTIONS``) needs no token, as
browsers send none. Bodies above the configured size are answered 413. ``/healthz`` needs nothing.
Nothing a request carries is logged.
"""

from __future__ import annotations

import asyncio
import hmac
import signal
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from core.codec import EncryptionCodec, PayloadDecryptionError
from eventflow.settings import CodecServerProcessSettings

log = structlog.get_logger(__name__)

ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
PREFLIGHT_MAX_AGE_SECONDS = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class CodecServer:
    """The codec server's aiohttp application; `start` binds it, `stop` closes it.

    Args:
        codec: the codec with the payload keys.
        token: the bearer token requests must carry.
        namespace: the Temporal namespace whose payloads these keys protect.
        cors_origins: origins (the Web UI's) allowed to call from a browser.
        max_body_bytes: largest request body.
        host: bind address (0.0.0.0 inside a pod).
        port: port; 0 picks a free one (read `port` after `start`).
    """

    def __init__(self, codec: EncryptionCodec, *, token: str, namespace: str, cors_origins: Sequence[str],
                 max_body_bytes: int, host: str = "0.0.0.0", port: int = 0) -> None:
        self._codec = codec
        self._token = token.encode()
        self._namespace = namespace
        self._origins = frozenset(cors_origins)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._cors])
        for action in ("encode", "decode"):
            for path in (f"/{action}", f"/{{namespace}}/{action}"):
                self.app.router.add_post(path, self._handler(action))
                self.app.router.add_route("OPTIONS", path, self._preflight)
        self.app.router.add_get("/healthz", self._healthz)

    @property
    def port(self) -> int:
        assert self._runner is not None and self._runner.addresses, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("codec_server_started", port=self.port, namespace=self._namespace,
                 encrypt_key_id=self._codec.encrypt_key_id)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413 from aiohttp: still answered with CORS headers
            response = _error(exc.status, exc.reason)
        origin = request.headers.get("Origin")
        if origin is not None and origin in self._origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in self._origins:
            return _error(403, "origin not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS)})

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    def _refusal(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            return _error(401, "a bearer token is required", {"WWW-Authenticate": 'Bearer realm="eventflow-codec"'})
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return _error(403, "wrong bearer token")
        namespace = request.match_info.get("namespace") or request.headers.get("X-Namespace")
        if namespace and namespace != self._namespace:
            return _error(403, f"namespace {namespace!r} is not served here")
        return None

    def _handler(self, action: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            refusal = self._refusal(request)
            if refusal is not None:
                log.warning("codec_request_refused", action=action, status=refusal.status)
                return refusal
            try:
                payloads = json_format.Parse(await request.text(), Payloads())
            except (json_format.ParseError, UnicodeDecodeError) as exc:
                return _error(400, f"body is not a Payloads JSON object: {type(exc).__name__}")
            try:
                if action == "encode":
                    result = await self._codec.encode(payloads.payloads)
                else:
                    result = await self._codec.decode(payloads.payloads)
            except PayloadDecryptionError as exc:
                log.warning("codec_decode_failed", key_id=exc.key_id, reason=exc.reason)
                return _error(400, str(exc))
            log.info("codec_request", action=action, payloads=len(result))
            return web.json_response(json_format.MessageToDict(Payloads(payloads=result)))

        return handle


def build_server(settings: CodecServerProcessSettings, *, port: int | None = None) -> CodecServer:
    """The server from validated settings (``port`` overrides the configured one; 0 picks a free one)."""
    keyring = settings.temporal.payload_keyring()
    token = settings.server.token
    assert keyring is not None and token is not None, "load_codec_server checks both"
    return CodecServer(EncryptionCodec(keyring), token=token.get_secret_value(),
                       namespace=settings.temporal.namespace, cors_origins=settings.server.cors_origins,
                       max_body_bytes=settings.server.max_body_bytes,
                       port=settings.server.port if port is None else port)


async def run_codec_server(settings: CodecServerProcessSettings) -> None:
    """Serves until SIGTERM or SIGINT, then closes the listener."""
    server = build_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
        log.info("codec_server_stopped")


__all__ = ["CodecServer", "build_server", "run_codec_server"]
