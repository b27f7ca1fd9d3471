"""A small asyncio HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``; binds 0.0.0.0 for pods.

Liveness (``/healthz``) only says the event loop answers: it never looks at Kafka or Temporal, so
an outage of either does not make Kubernetes restart every pod at once. Readiness (``/readyz``)
runs the process's checks (see `all_of`, `kafka_check`, `temporal_check`) with a deadline and
answers 503 naming what failed, e.g. ``not ready: kafka=ok temporal=unreachable (RPCError)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from temporalio.client import Client

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]
ClientSource = Client | Callable[[], Awaitable[Client]]

DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0


class OpsServer:
    """Serves the registry's metrics, liveness, and readiness from ``readiness``.

    Args:
        registry: the process's metrics registry.
        readiness: the readiness check; an exception or a timeout counts as not ready.
        host: bind address; 0.0.0.0 so the kubelet and Prometheus reach it inside a pod.
        port: port; 0 picks a free one (tests read `port` after `start`).
        readiness_timeout_seconds: deadline of one readiness evaluation.
    """

    def __init__(self, registry: CollectorRegistry, readiness: ReadinessCheck, *, host: str = "0.0.0.0",
                 port: int = 9464, readiness_timeout_seconds: float = 5.0) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._readiness_timeout = readiness_timeout_seconds
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Starts listening."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("ops_server_started", port=self.port)

    async def stop(self) -> None:
        """Stops listening and closes open connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            method = parts[0] if parts else "GET"
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
            if method not in ("GET", "HEAD"):
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"method not allowed\n"
            else:
                status, content_type, body = await self._route(path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head if method == "HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            # In a thread: collectors may do I/O (the worker's re-exports the Temporal SDK's
            # exporter over loopback) and must not stall the event loop the process runs on.
            body = await asyncio.to_thread(generate_latest, self._registry)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if path in ("/healthz", "/livez"):
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            ready, detail = await self._evaluate_readiness()
            return ("200 OK" if ready else "503 Service Unavailable"), "text/plain", f"{detail}\n".encode()
        return "404 Not Found", "text/plain", b"not found\n"

    async def _evaluate_readiness(self) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(self._readiness(), timeout=self._readiness_timeout)
        except TimeoutError:
            return False, f"not ready: readiness checks took longer than {self._readiness_timeout}s"
        except Exception as exc:  # a broken check must answer 503, not drop the probe's connection
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
        except Exception as exc:  # reported in the probe's body; the verdict is what matters
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
        except Exception as exc:  # RPCError, connection refused, TLS errors: all mean "not ready"
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

