"""The ops HTTP server (``/metrics``, ``/healthz``, ``/readyz``) on aiohttp; binds 0.0.0.0 for pods.

Liveness (``/healthz``) only says the event loop answers: it never looks at Kafka or Temporal, so
an outage of either does not make Kubernetes restart every pod at once. Readiness (``/readyz``)
runs the process's checks (see `all_of`, `kafka_check`, `temporal_check`) with a deadline and
answers 503 naming what failed, e.g. ``not ready: kafka=ok temporal=unreachable (RPCError)``.

aiohttp parses HTTP (an oversized request line or header is answered 400); on top of it every
request has a whole-request deadline (a client that trickles its headers is disconnected when it
expires) and the server holds at most ``max_connections`` connections, answering 503 to the next
one at once, so neither a slow client nor a flood can hold the probe port.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from temporalio.client import Client

from core.errors import ConfigError
from core.settings import OpsSettings

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]
ClientSource = Client | Callable[[], Awaitable[Client]]

DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0

_OVER_CAPACITY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
                  b"Connection: close\r\n\r\ntoo many connections\n")


class _OverCapacity(asyncio.Protocol):
    """Answers a connection beyond the cap with 503 and closes it, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # TCP: always a read/write transport
        transport.write(_OVER_CAPACITY)
        transport.close()


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _Gate(asyncio.Protocol):
    """Admits a connection to aiohttp unless its source already holds its share of the connections.

    The peer is known only once the connection is made, so the decision is made here: an admitted
    connection is handed to an aiohttp protocol (``set_protocol``), one over its source's share is
    answered 503 and closed, unread.
    """

    def __init__(self, admit: Callable[[str], bool], make: Callable[[], asyncio.BaseProtocol]) -> None:
        self._admit = admit
        self._make = make

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # TCP: always a full transport
        peer = transport.get_extra_info("peername")
        if not self._admit(str(peer[0]) if peer else ""):
            _OverCapacity().connection_made(transport)
            return
        inner = self._make()
        transport.set_protocol(inner)
        inner.connection_made(transport)


class CappedListener:
    """An aiohttp low-level server that holds at most ``max_connections`` connections.

    The connection beyond the cap is answered 503 at once, unread; so is one from a source (an IP
    address) that already holds ``max_connections_per_source``, so one client cannot take every slot.
    aiohttp arms its keep-alive timer when a connection opens and closes the connection if no complete
    request arrived by then: with ``header_deadline_seconds`` that timer is the header-reading
    deadline, and after a response it is the idle time a keep-alive connection may hold its slot
    (``idle_seconds``, the header deadline when not given; the webhook service keeps it short).
    The ops server and the webhook service both listen through it; each adds its own whole-request
    deadline in its handler. Longer request lines and header lines than ``max_line_bytes``
    (aiohttp's default) are answered 400. A port that cannot be bound is a `ConfigError` naming
    ``port_variable``, the setting that chose it.
    """

    def __init__(self, handler: Handler, *, host: str, port: int, max_connections: int,
                 header_deadline_seconds: float, port_variable: str, max_line_bytes: int = 8190,
                 max_connections_per_source: int | None = None, idle_seconds: float | None = None) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._port_variable = port_variable
        self._max_connections = max_connections
        self._per_source = max_connections_per_source
        self._header_deadline = header_deadline_seconds
        self._idle = idle_seconds if idle_seconds is not None else header_deadline_seconds
        self._max_line = max_line_bytes
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None
        #: Connections refused because their source held its share (for metrics and tests).
        self.refused_per_source = 0

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections being served now (not counting those answered 503 over the cap)."""
        return 0 if self._web is None else len(self._web.connections)

    async def start(self) -> None:
        """Starts listening."""
        # aiohttp has one timer for both: the first request's headers and a kept-alive connection's idle
        # time. The shorter one is armed, so a short idle time also shortens the header deadline.
        web_server = web.Server(self._handler, access_log=None,
                                keepalive_timeout=min(self._header_deadline, self._idle),
                                max_line_size=self._max_line, max_field_size=self._max_line)
        self._web = web_server

        def admit(source: str) -> bool:
            held = sum(1 for c in web_server.connections if _source(c) == source)
            if self._per_source is not None and held >= self._per_source:
                self.refused_per_source += 1
                return False
            return True

        def protocol() -> asyncio.BaseProtocol:
            if len(web_server.connections) >= self._max_connections:
                return _OverCapacity()
            if self._per_source is None:
                return web_server()
            return _Gate(admit, web_server)

        try:
            self._server = await asyncio.get_running_loop().create_server(protocol, self._host, self._port)
        except OSError as exc:
            # Typically a second process on the host with the same default port: name the setting
            # that moves it rather than leave a bare "[Errno 98]" traceback.
            taken = exc.errno == errno.EADDRINUSE
            raise ConfigError(self._port_variable, f"cannot listen on {self._host}:{self._port}: "
                              + ("another process holds the port; set a free port" if taken
                                 else (exc.strerror or str(exc)))) from exc

    async def stop(self, shutdown_timeout_seconds: float) -> None:
        """Stops listening and closes open connections, waiting up to the timeout for their handlers."""
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            await self._web.shutdown(timeout=shutdown_timeout_seconds)
        if self._server is not None:
            await self._server.wait_closed()


def _source(connection: object) -> str:
    transport = getattr(connection, "transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else ""


class OpsServer:
    """Serves the registry's metrics, liveness, and readiness from ``readiness``.

    Args:
        registry: the process's metrics registry.
        readiness: the readiness check; an exception or a timeout counts as not ready.
        host: bind address; 0.0.0.0 so the kubelet and Prometheus reach it inside a pod.
        port: port; 0 picks a free one (tests read `port` after `start`).
        readiness_timeout_seconds: deadline of one readiness evaluation.
        request_deadline_seconds: deadline of a whole request, from connecting to the response
            (reading the request line and headers, and handling it).
        max_connections: open connections at most; the next one is answered 503 and closed.
        max_request_line_bytes: longer request lines and header lines are answered 400.
    """

    def __init__(self, registry: CollectorRegistry, readiness: ReadinessCheck, *, host: str = "0.0.0.0",
                 port: int = 9464, readiness_timeout_seconds: float = 5.0, request_deadline_seconds: float = 10.0,
                 max_connections: int = 64, max_request_line_bytes: int = 8190) -> None:
        self._registry = registry
        self._readiness = readiness
        self._readiness_timeout = readiness_timeout_seconds
        self._request_deadline = request_deadline_seconds
        self._listener = CappedListener(self._handle, host=host, port=port, max_connections=max_connections,
                                        header_deadline_seconds=request_deadline_seconds,
                                        port_variable=OpsSettings.variable("metrics_port"),
                                        max_line_bytes=max_request_line_bytes)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0 in tests)."""
        return self._listener.port

    @property
    def open_connections(self) -> int:
        """Connections being served now (not counting those answered 503 over the cap)."""
        return self._listener.open_connections

    async def start(self) -> None:
        """Starts listening."""
        await self._listener.start()
        log.info("ops_server_started", port=self.port)

    async def stop(self) -> None:
        """Stops listening and closes open connections."""
        await self._listener.stop(shutdown_timeout_seconds=1.0)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            response = web.Response(status=405, text="method not allowed\n")
        else:
            try:
                async with asyncio.timeout(self._request_deadline):
                    response = await self._route(request.path, request.headers.get("Accept", ""))
            except TimeoutError:
                response = web.Response(status=503, text="request deadline exceeded\n")
        # One request per connection: probes and scrapers reconnect anyway, and no idle
        # keep-alive connection holds one of the capped slots.
        response.force_close()
        return response

    async def _route(self, path: str, accept: str = "") -> web.Response:
        if path == "/metrics":
            # OpenMetrics when the scraper asks for it: only that format carries exemplars (trace links).
            openmetrics = "application/openmetrics-text" in accept
            render, content_type = ((openmetrics_latest, OPENMETRICS_CONTENT_TYPE) if openmetrics
                                    else (generate_latest, CONTENT_TYPE_LATEST))
            # In a thread: collectors may do I/O (the worker's re-exports the Temporal SDK's
            # exporter over loopback) and must not stall the event loop the process runs on.
            body = await asyncio.to_thread(render, self._registry)
            response = web.Response(body=body)
            response.headers["Content-Type"] = content_type
            return response
        if path in ("/healthz", "/livez"):
            return web.Response(text="ok\n")
        if path == "/readyz":
            ready, detail = await self._evaluate_readiness()
            return web.Response(status=200 if ready else 503, text=f"{detail}\n")
        return web.Response(status=404, text="not found\n")

    async def _evaluate_readiness(self) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(self._readiness(), timeout=self._readiness_timeout)
        except TimeoutError:
            return False, f"not ready: readiness checks took longer than {self._readiness_timeout}s"
        except Exception as exc:  # noqa: BLE001 - a broken check must answer 503, not drop the probe's connection
            log.warning("readiness_check_failed", error_type=type(exc).__name__)
            return False, f"not ready: readiness check raised {type(exc).__name__}"


def all_of(checks: Mapping[str, ReadinessCheck], *,
           timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS) -> ReadinessCheck:
    """One check that is ready only when every named check is; they run concurrently.

    The detail lists each check, e.g. ``ready: consumer=polling kafka=ok temporal=ok``.
    """

    async def one(check: ReadinessCheck) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(check(), timeout=timeout_seconds)
        except TimeoutError:
            return False, f"timed out after {timeout_seconds}s"
        except Exception as exc:  # noqa: BLE001 - reported in the probe's body; the verdict is what matters
            return False, f"error ({type(exc).__name__})"

    async def check() -> tuple[bool, str]:
        names = list(checks)
        results = await asyncio.gather(*(one(checks[name]) for name in names))
        ready = all(ok for ok, _ in results)
        detail = " ".join(f"{name}={text}" for name, (_, text) in zip(names, results, strict=True))
        return ready, f"{'ready' if ready else 'not ready'}: {detail}"

    return check


def temporal_check(client: ClientSource) -> ReadinessCheck:
    """Ready when the Temporal frontend answers its gRPC health check.

    Args:
        client: a connected client, or an async factory called once on first use (so a process
            can probe with its own connection without changing how it builds its clients).
    """
    cached: list[Client] = [client] if isinstance(client, Client) else []

    async def check() -> tuple[bool, str]:
        try:
            if not cached:
                assert not isinstance(client, Client)  # narrowed: only factories leave the cache empty
                cached.append(await client())
            healthy = await cached[0].service_client.check_health()
        except Exception as exc:  # noqa: BLE001 - RPCError, connection refused, TLS errors: all mean "not ready"
            return False, f"unreachable ({type(exc).__name__})"
        return (True, "ok") if healthy else (False, "unhealthy")

    return check


def kafka_check(client_config: Mapping[str, str], topic: str | None = None, *,
                timeout_seconds: float = 1.5) -> ReadinessCheck:
    """Ready when a Kafka broker answers a metadata request and ``topic`` (if given) exists.

    One admin client is created on first use and reused, with the same librdkafka settings (SASL,
    SSL) as the process's consumer, so the probe takes the same network and auth path. The
    metadata timeout stays below `all_of`'s deadline so the verdict says "unreachable".
    """
    admins: list[AdminClient] = []

    def metadata() -> tuple[bool, str]:
        if not admins:
            admins.append(AdminClient(dict(client_config)))
        try:
            # All topics, not ``topic=``: a request naming one topic can auto-create it on some brokers.
            found = admins[0].list_topics(timeout=timeout_seconds)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            name = error.name() if isinstance(error, KafkaError) else type(exc).__name__
            return False, f"unreachable ({name})"
        if topic is not None:
            meta = found.topics.get(topic)
            if meta is None or meta.error is not None:
                return False, f"topic {topic} missing"
        return True, "ok"

    async def check() -> tuple[bool, str]:
        return await asyncio.to_thread(metadata)

    return check

