"""Start-up with a dependency down: waited for while live, then one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from temporalio.client import Client

from consumer.startup import STARTUP_DEADLINE_SECONDS
from tests.harness import consumer_env

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env_without(dependency: str, base: dict[str, str]) -> tuple[dict[str, str], str]:
    env, address = dict(base), f"127.0.0.1:{_closed_port()}"
    match dependency:
        case "Kafka":
            env["KAFKA_BOOTSTRAP_SERVERS"] = address
        case "Temporal":
            env["TEMPORAL_ADDRESS"] = address
        case _:
            address = f"http://{address}"
            env["EVENTFLOW_SCHEMA_REGISTRY_URL"] = address
    return env, address


async def _consume(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow.cli", "consume", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_an_unreachable_dependency_ends_start_up_with_one_line_naming_it(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, unique: str) -> None:
    base = consumer_env(kafka_config, temporal_client.service_client.config.target_host, topic, unique)

    async def one(dependency: str) -> None:
        env, address = _env_without(dependency, base)
        process = await _consume(env)
        stdout, stderr = await asyncio.wait_for(process.communicate(), STARTUP_DEADLINE_SECONDS + 90)
        lines = [line for line in stderr.decode().splitlines() if line.strip()]
        assert process.returncode == 2, stderr.decode()
        assert lines[-1].startswith(f"eventflow: cannot start: {dependency} at {address} is unreachable: "), lines
        assert all("dependency_unavailable_waiting" in line for line in lines[:-1]), lines
        assert b"Traceback" not in stdout + stderr

    await asyncio.gather(*(one(d) for d in ("Kafka", "Temporal", "the schema registry")))


async def test_sigterm_while_waiting_for_a_dependency_exits_cleanly(
        kafka_config: dict[str, str], temporal_client: Client, topic: str, unique: str) -> None:
    env, _ = _env_without("Kafka", consumer_env(kafka_config, temporal_client.service_client.config.target_host,
                                                topic, unique))
    process = await _consume(env)
    assert process.stderr is not None
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), 60)
        assert line, "the consumer ended before it waited for Kafka"
        if b"dependency_unavailable_waiting" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
