"""Wires the worker process together from validated settings."""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry

from activities.config import build_channels
from eventflow.http import OpsServer
from eventflow.settings import Settings
from eventflow.temporal_client import connect
from workflows.worker import build_worker

log = structlog.get_logger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs the journey worker until SIGTERM/SIGINT (or ``stop``), then drains in-flight activities."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings.temporal)
    worker = build_worker(client, settings.temporal.task_queue, build_channels())
    registry = CollectorRegistry()

    async def readiness() -> tuple[bool, str]:
        try:
            healthy = await asyncio.wait_for(client.service_client.check_health(), timeout=2)
        except Exception as exc:  # any failure means not ready; the probe only needs the verdict
            return False, f"temporal unreachable: {type(exc).__name__}"
        return (True, "polling") if healthy else (False, "temporal unhealthy")

    ops = OpsServer(registry, readiness, port=settings.metrics_port) if settings.metrics_port else None
    if ops is not None:
        await ops.start()
    try:
        async with worker:
            log.info("worker_started", task_queue=settings.temporal.task_queue)
            await stop.wait()
            log.info("worker_draining")
    finally:
        if ops is not None:
            await ops.stop()
    log.info("worker_stopped")
