"""The ops endpoints over real HTTP, and readiness checks against the real Kafka and Temporal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from temporalio.client import Client

from core.errors import ConfigError
from core.http import OpsServer, ReadinessCheck, all_of, kafka_check, temporal_check
from devstack import Endpoints


async def _request(port: int, method: str, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def _fixed(ready: bool, detail: str) -> ReadinessCheck:
    async def check() -> tuple[bool, str]:
        return ready, detail

    return check


Serve = Callable[..., Awaitable[OpsServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[OpsServer] = []

    async def start(readiness: ReadinessCheck, **options: object) -> OpsServer:
        registry = CollectorRegistry()
        Counter("eventflow_test_things_total", "Things.", registry=registry).inc(3)
        server = OpsServer(registry, readiness, host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]  # each test passes a subset of the keyword options
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def test_metrics_health_and_unknown_paths(serve: Serve) -> None:
    server = await serve(_fixed(True, "ok"))
    assert server.port != 0
    status, body = await _request(server.port, "GET", "/metrics")
    assert status == 200
    assert "eventflow_test_things_total 3.0" in body
    assert await _request(server.port, "GET", "/healthz") == (200, "ok\n")
    assert (await _request(server.port, "GET", "/nope"))[0] == 404
    assert (await _request(server.port, "POST", "/readyz"))[0] == 405
    assert await _request(server.port, "HEAD", "/healthz") == (200, "")


async def test_readyz_answers_503_with_the_reason(serve: Serve) -> None:
    ready = await serve(_fixed(True, "ready: all good"))
    assert await _request(ready.port, "GET", "/readyz") == (200, "ready: all good\n")
    not_ready = await serve(_fixed(False, "not ready: kafka=unreachable"))
    assert await _request(not_ready.port, "GET", "/readyz") == (503, "not ready: kafka=unreachable\n")


async def test_a_raising_or_hanging_check_is_not_ready_and_the_server_keeps_serving(serve: Serve) -> None:
    async def raises() -> tuple[bool, str]:
        raise RuntimeError("bug in a check")

    async def hangs() -> tuple[bool, str]:
        await asyncio.sleep(60)
        return True, "never"

    broken = await serve(raises)
    assert await _request(broken.port, "GET", "/readyz") == (503, "not ready: readiness check raised RuntimeError\n")
    slow = await serve(hangs, readiness_timeout_seconds=0.2)
    status, body = await _request(slow.port, "GET", "/readyz")
    assert status == 503 and "took longer than 0.2s" in body
    assert await _request(slow.port, "GET", "/healthz") == (200, "ok\n")


async def test_all_of_needs_every_check_and_names_each() -> None:
    async def hangs() -> tuple[bool, str]:
        await asyncio.sleep(60)
        return True, "never"

    assert await all_of({"a": _fixed(True, "ok"), "b": _fixed(True, "ok")})() == (True, "ready: a=ok b=ok")
    ready, detail = await all_of({"a": _fixed(True, "ok"), "b": hangs}, timeout_seconds=0.1)()
    assert not ready and detail == "not ready: a=ok b=timed out after 0.1s"


async def test_kafka_check_against_the_real_broker(kafka_config: dict[str, str], topic: str) -> None:
    assert await kafka_check(kafka_config)() == (True, "ok")
    assert await kafka_check(kafka_config, topic)() == (True, "ok")
    assert await kafka_check(kafka_config, f"{topic}-absent")() == (False, f"topic {topic}-absent missing")


async def test_kafka_check_when_no_broker_listens() -> None:
    ready, detail = await kafka_check({"bootstrap.servers": "127.0.0.1:1"})()
    assert not ready and detail.startswith("unreachable")


async def test_temporal_check_against_the_real_server_and_a_dead_address(
        temporal_client: Client, endpoints: Endpoints) -> None:
    assert await temporal_check(temporal_client)() == (True, "ok")
    factory_calls = 0

    async def connect() -> Client:
        nonlocal factory_calls
        factory_calls += 1
        return await Client.connect(endpoints.temporal_address)

    lazy = temporal_check(connect)
    assert await lazy() == (True, "ok") and await lazy() == (True, "ok")
    assert factory_calls == 1, "the factory's client is reused between probes"

    async def dead() -> Client:
        return await Client.connect("127.0.0.1:1")

    ready, detail = await temporal_check(dead)()
    assert not ready and detail.startswith("unreachable")



class _SlowCollector(Collector):
    """Like the worker's re-export of the SDK's exporter: I/O inside collect()."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        time.sleep(1.0)
        yield GaugeMetricFamily("eventflow_test_slow", "Slow to collect.", value=1)


async def test_a_slow_collector_does_not_stall_liveness() -> None:
    registry = CollectorRegistry()
    registry.register(_SlowCollector())
    server = OpsServer(registry, _fixed(True, "ok"), host="127.0.0.1", port=0)
    await server.start()
    try:
        scrape = asyncio.create_task(_request(server.port, "GET", "/metrics"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await _request(server.port, "GET", "/healthz") == (200, "ok\n")
        assert time.monotonic() - started < 0.5, "/healthz waited for the scrape"
        assert "eventflow_test_slow 1.0" in (await scrape)[1]
    finally:
        await server.stop()


async def test_a_70_kb_request_line_is_answered_400_and_the_server_keeps_serving(serve: Serve) -> None:
    server = await serve(_fixed(True, "ok"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /{'a' * 70_000} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"400"
    assert await _request(server.port, "GET", "/healthz") == (200, "ok\n")


async def test_a_slow_client_is_disconnected_at_the_deadline_and_never_blocks_liveness(serve: Serve) -> None:
    """Slowloris: headers trickle in one byte at a time and never end."""
    server = await serve(_fixed(True, "ok"), request_deadline_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
    closed_by_server = False
    for _ in range(600):  # at most 60 s of trickling: far beyond the deadline
        assert await _request(server.port, "GET", "/healthz") == (200, "ok\n")
        try:
            writer.write(b"X")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), timeout=0.1)
        except TimeoutError:
            continue
        except ConnectionError:
            closed_by_server = True
            break
        assert data == b"", "the server answered a request whose headers never ended"
        closed_by_server = True
        break
    writer.close()
    assert closed_by_server, "a client that never finishes its headers keeps its connection"


async def test_connections_beyond_the_cap_are_answered_503_at_once(serve: Serve) -> None:
    server = await serve(_fixed(True, "ok"), max_connections=3, request_deadline_seconds=60)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    for _ in range(200):  # accepting is asynchronous: wait until the server holds all three
        if server.open_connections == 3:
            break
        await asyncio.sleep(0.01)
    status, body = await _request(server.port, "GET", "/healthz")
    assert (status, body) == (503, "too many connections\n")
    for _, writer in idle:
        writer.close()
        await writer.wait_closed()
    for _ in range(100):  # the server notices the closes on its next loop iterations
        status, body = await _request(server.port, "GET", "/healthz")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert (status, body) == (200, "ok\n")


async def test_a_port_in_use_is_one_line_naming_the_setting() -> None:
    held = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = held.sockets[0].getsockname()[1]
    try:
        server = OpsServer(CollectorRegistry(), _fixed(True, "ok"), host="127.0.0.1", port=port)
        with pytest.raises(ConfigError) as raised:
            await server.start()
    finally:
        held.close()
        await held.wait_closed()
    assert raised.value.variable == "EVENTFLOW_METRICS_PORT"
    assert str(raised.value) == (f"EVENTFLOW_METRICS_PORT: cannot listen on 127.0.0.1:{port}: another process "
                                 "holds the port; set a free port")
