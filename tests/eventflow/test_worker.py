"""The worker process's start-up: fail closed on the outbox, one-line errors, journey channels."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from consumer.catalog_channels import journey_channels
from devstack import Endpoints
from eventflow.commands.temporal_setup import register_search_attributes
from eventflow.settings import load_settings, load_worker
from eventflow.worker import provider_call_threads, run_worker, worker_limits, workflow_runner
from journeys import load_all
from tests.eventflow.sandbox_probe import SandboxProbe
from tests.harness import eventually
from workflows.worker import WorkerLimits

REPO = Path(__file__).resolve().parents[2]


def _start_worker(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "TEMPORAL_"))}
    env.update({"PYTHONPATH": str(REPO), "EVENTFLOW_CACHE_DIR": str(tmp_path), "EVENTFLOW_METRICS_PORT": "0",
                "EVENTFLOW_TEMPORAL_METRICS_PORT": "0", **environment})
    return subprocess.run([sys.executable, "-m", "eventflow.cli", "worker"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_shipped_journeys_send_email_and_sms_including_fallbacks() -> None:
    assert journey_channels(load_all()) == {"email", "sms"}


def test_worker_refuses_the_outbox_for_used_channels_outside_dev_mode(tmp_path: Path) -> None:
    result = _start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_SMS_PROVIDER="outbox")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("eventflow: EVENTFLOW_EMAIL_PROVIDER: is unset (outbox)")
    assert "EVENTFLOW_DEV_MODE=true" in line
    assert not (tmp_path / "outbox.jsonl").exists()


def test_worker_refuses_a_send_lease_a_providers_call_cannot_end_in(tmp_path: Path) -> None:
    # A call that may outlive the lease is never made (SendLeaseTooShort, ADR-9): such sends would
    # never leave, so the worker says so at start. The defaults fit every provider, SMTP's included.
    smtp = {"EVENTFLOW_DEV_MODE": "true", "TEMPORAL_ADDRESS": "127.0.0.1:1", "EVENTFLOW_EMAIL_PROVIDER": "smtp",
            "EVENTFLOW_SMTP_HOST": "127.0.0.1", "EVENTFLOW_EMAIL_FROM": "shop@example.com"}
    short = _start_worker(tmp_path, **smtp, EVENTFLOW_SEND_LEASE_SECONDS="12")
    assert short.returncode == 2
    [line] = short.stderr.strip().splitlines()
    assert line.startswith("eventflow: EVENTFLOW_SEND_LEASE_SECONDS: is 12 s, but one smtp call may take 20 s"), line
    assert "EVENTFLOW_PROVIDER_TIMEOUT_SECONDS" in line
    defaults = _start_worker(tmp_path, **smtp)
    assert "cannot connect to Temporal" in defaults.stderr, defaults.stderr


def test_worker_says_in_one_line_that_temporal_is_unreachable(tmp_path: Path) -> None:
    result = _start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_DEV_MODE="true")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eventflow: TEMPORAL_ADDRESS=127.0.0.1:1: cannot connect to Temporal (namespace default): connection refused"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _readyz(port: int) -> tuple[int, str] | None:
    def fetch() -> tuple[int, str] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return None  # not listening yet

    return await asyncio.to_thread(fetch)  # the ops server runs on this loop


async def test_worker_is_not_ready_while_the_search_attributes_are_missing(
        endpoints: Endpoints, temporal_client: Client, fresh_namespace: str, tmp_path: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    for name, value in {"TEMPORAL_ADDRESS": endpoints.temporal_address, "TEMPORAL_NAMESPACE": fresh_namespace,
                        "EVENTFLOW_TASK_QUEUE": f"q-{unique}", "EVENTFLOW_METRICS_PORT": str(port),
                        "EVENTFLOW_TEMPORAL_METRICS_PORT": "0", "EVENTFLOW_DEV_MODE": "true",
                        "EVENTFLOW_OUTBOX_PATH": str(tmp_path / "outbox.jsonl")}.items():
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(load_settings(), stop, registry=CollectorRegistry()))
    try:
        status, body = await eventually(lambda: _readyz(port), message="worker /readyz")
        assert status == 503
        assert (f"search_attributes=missing CustomerId, JourneyId, JourneyVersion in namespace {fresh_namespace}: "
                "run eventflow temporal setup") in body
        assert "temporal=ok" in body
        await register_search_attributes(temporal_client, fresh_namespace)

        async def ready() -> bool:
            answer = await _readyz(port)
            return answer is not None and answer[0] == 200

        await eventually(ready, message="worker ready after setup")
        assert await _readyz(port) == (200, "ready: temporal=ok search_attributes=ok\n")
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)


def test_worker_says_in_one_line_that_its_sdk_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_DEV_MODE="true",
                               EVENTFLOW_TEMPORAL_METRICS_PORT=str(port))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"eventflow: EVENTFLOW_TEMPORAL_METRICS_PORT: cannot listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in line


async def test_worker_says_once_that_it_drains(endpoints: Endpoints, tmp_path: Path, unique: str) -> None:
    import signal

    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "TEMPORAL_"))}
    env.update({"PYTHONPATH": str(REPO), "EVENTFLOW_CACHE_DIR": str(tmp_path), "EVENTFLOW_METRICS_PORT": "0",
                "EVENTFLOW_TEMPORAL_METRICS_PORT": "0", "EVENTFLOW_DEV_MODE": "true",
                "TEMPORAL_ADDRESS": endpoints.temporal_address, "EVENTFLOW_TASK_QUEUE": f"q-{unique}"})
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "eventflow.cli", "worker"], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    try:
        await eventually(lambda: "worker_started" in log.read_text(), timeout_seconds=60, message="worker_started")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
    text = log.read_text()
    assert code == 0, text
    assert text.count('"worker_draining"') == 1, text
    assert "Beginning worker shutdown" not in text, text


def test_worker_polls_with_its_configured_pollers() -> None:
    settings = load_worker({"EVENTFLOW_WORKER_WORKFLOW_TASK_POLLERS": "12", "EVENTFLOW_WORKER_ACTIVITY_TASK_POLLERS": "7"})
    limits = worker_limits(settings.worker, settings.consumer)

    assert (limits.workflow_task_pollers, limits.activity_task_pollers) == (12, 7)
    assert WorkerLimits().workflow_task_pollers == 10  # the SDK's 5 leave a single poll for new journeys


async def test_blocking_provider_calls_are_not_held_to_asyncios_six_threads() -> None:
    # asyncio's default executor has min(32, cores + 4) threads; SendGrid's and Twilio's clients block.
    settings = load_worker({"EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES": "12", "EVENTFLOW_BROADCAST_SEND_CONCURRENCY": "8"})
    executor = provider_call_threads(settings.worker)
    everyone = threading.Barrier(20, timeout=30)  # passes only when 20 calls block at the same time
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(*(loop.run_in_executor(executor, everyone.wait) for _ in range(20)))
    finally:
        executor.shutdown(wait=False)
    assert executor._max_workers == 20


@pytest.mark.parametrize(("environ", "sandboxed"), [({}, False), ({"EVENTFLOW_WORKER_WORKFLOW_SANDBOX": "true"}, True)])
async def test_worker_runs_workflows_unsandboxed_unless_the_sandbox_is_asked_for(
        time_skipping_env: WorkflowEnvironment, environ: dict[str, str], sandboxed: bool, unique: str) -> None:
    settings = load_worker(environ)
    async with Worker(time_skipping_env.client, task_queue=f"probe-{unique}", workflows=[SandboxProbe],
                      workflow_runner=workflow_runner(settings.worker)):
        ran_in_sandbox = await time_skipping_env.client.execute_workflow(
            SandboxProbe.run, id=f"probe-{unique}", task_queue=f"probe-{unique}")

    assert ran_in_sandbox is sandboxed
