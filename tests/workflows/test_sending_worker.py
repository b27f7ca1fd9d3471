"""The ``eventflow worker`` process: settings, send and SDK metrics on /metrics, SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client

from activities.outbox import read_outbox
from devstack import Endpoints
from eventflow.settings import load_settings
from eventflow.worker import run_worker
from tests.activities.journey_support import event, journey, run_journey, send
from tests.harness import eventually


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _scrape(port: int) -> str:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    return await asyncio.to_thread(fetch)  # the ops server runs on this loop


async def test_worker_serves_send_and_sdk_metrics_and_stops_on_sigterm(
        endpoints: Endpoints, temporal_client: Client, tmp_path: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    metrics_port, sdk_port, queue = _free_port(), _free_port(), f"q-{unique}"
    environment = {
        "TEMPORAL_ADDRESS": endpoints.temporal_address,
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "EVENTFLOW_TASK_QUEUE": queue,
        "EVENTFLOW_METRICS_PORT": str(metrics_port),
        "EVENTFLOW_TEMPORAL_METRICS_PORT": str(sdk_port),
        "EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES": "7",
        "EVENTFLOW_OUTBOX_PATH": str(tmp_path / "outbox.jsonl"),
        "EVENTFLOW_DEV_MODE": "true",  # the outbox serves the journeys' channels
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    registry = CollectorRegistry()
    running = asyncio.create_task(run_worker(load_settings(), registry=registry))
    try:
        status = await asyncio.wait_for(
            run_journey(temporal_client, queue, journey([send("thank_you", "email")]), event(f"c-{unique}"),
                        f"journey:test:{unique}"), 60)
        assert status.sends[0].status == "sent"
        assert len(read_outbox(tmp_path / "outbox.jsonl")) == 1

        text = await eventually(lambda: _scrape(metrics_port), message="/metrics")
        assert 'eventflow_notifications_sent_total{channel="email",outcome="sent",provider="outbox"} 1.0' in text
        assert 'eventflow_notification_send_seconds_count{channel="email",provider="outbox"} 1.0' in text
        async def sdk_metrics() -> str | None:
            scraped = await _scrape(metrics_port)
            return scraped if "temporal_worker_task_slots_available" in scraped else None

        sdk = await eventually(sdk_metrics, message="SDK metrics")
        assert f'task_queue="{queue}"' in sdk
        assert 'temporal_worker_task_slots_available' in sdk
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, 30)
    assert running.exception() is None
