"""An unreachable Kafka, Temporal or registry at start-up is one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.harness import consumer_env


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("dependency", ["Kafka", "Temporal", "the schema registry"])
async def test_an_unreachable_dependency_is_one_line_naming_it(
        dependency: str, kafka_config: dict[str, str], temporal_client: Client, topic: str, unique: str) -> None:
    env = consumer_env(kafka_config, temporal_client.service_client.config.target_host, topic, unique)
    address = f"127.0.0.1:{_closed_port()}"
    match dependency:
        case "Kafka":
            env["KAFKA_BOOTSTRAP_SERVERS"] = address
        case "Temporal":
            env["TEMPORAL_ADDRESS"] = address
        case _:
            address = f"http://{address}"
            env["EVENTFLOW_SCHEMA_REGISTRY_URL"] = address
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventflow.cli", "consume", env=env, cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert process.returncode == 2, stderr.decode()
    assert len(lines) == 1, stderr.decode()
    assert lines[0].startswith(f"eventflow: cannot start: {dependency} at {address} is unreachable: "), lines[0]
    assert b"Traceback" not in stdout + stderr
