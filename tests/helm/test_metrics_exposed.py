"""What the dashboard and the alerts read is what a running consumer and worker expose.

The consumer and the worker run as real processes (``python -m eventflow.cli consume|worker``),
configured with exactly the environment the chart renders (paths remapped to a temporary folder),
against the real test Kafka and Temporal. The test waits for ``/readyz``, drives an event, a
poison record and a failing workflow task through them, scrapes ``/metrics`` over HTTP, and
checks every series name the dashboard and the alert rules reference. On SIGTERM both exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.outcomes import DELIVERY_SIGNAL, DeliveryOutcome, DeliveryReport
from devstack import Endpoints
from eventflow import settings
from events import samples
from events.producer import EventProducer
from events.schemas import load as load_schemas
from tests.harness import eventually
from tests.helm.chart import (
    ALL_ON,
    REPO,
    WEBHOOK_SERVICE_SERIES,
    Rendered,
    dashboard,
    dashboard_exprs,
    exposed_names,
    helm_template,
    journeys_set_files,
    metric_names,
    prometheus_rules,
    rule_exprs,
)

pytestmark = pytest.mark.timeout(240)

# Series the dashboard and alerts read that a running process does not serve yet, each with the
# reason. The test fails as soon as one of them appears, to move it back under the check.
PENDING: frozenset[str] = frozenset({
    # No shipped sample journey declares a goal, so no instance here converts; the series is
    # checked by the interpreter's own tests (tests/workflows/test_journey_goals.py).
    "eventflow_journey_conversions_total",
})


@dataclass
class Process:
    """One running Eventflow process and its ops port."""

    component: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    async def aget(self, path: str) -> tuple[int, str]:
        return await asyncio.to_thread(self.get, path)

    def describe(self) -> str:
        return f"{self.component} (exit {self.popen.poll()}), log:\n{self.log.read_text()[-4000:]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_env(rendered: Rendered, component: str, tmp_path: Path, port: int) -> dict[str, str]:
    """The container's environment from the rendered Deployment, with pod paths mapped to ``tmp_path``."""
    journeys = tmp_path / "journeys"
    remap = {"/tmp/eventflow": str(tmp_path / f"cache-{component}"), "/etc/eventflow/journeys": str(journeys)}
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("EVENTFLOW_", "KAFKA_", "TEMPORAL_"))}
    for name, item in rendered.env(component).items():
        assert "value" in item, f"{name} needs a Secret, which this test does not create"
        value = str(item["value"])
        env[name] = remap.get(value, value)
    env["EVENTFLOW_METRICS_PORT"] = str(port)
    if component == "worker" and "EVENTFLOW_TEMPORAL_METRICS_PORT" in settings.variables(settings.Process.WORKER):
        # The SDK exporter's loopback port: pods have their own network namespace, parallel test
        # processes on one machine do not.
        env["EVENTFLOW_TEMPORAL_METRICS_PORT"] = str(_free_port())
    env["PYTHONPATH"] = str(REPO)
    return env


def _write_journeys(rendered: Rendered, folder: Path) -> None:
    for kind in ("definitions", "templates"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for name, text in rendered.one("ConfigMap", f"-journey-{kind}")["data"].items():
            (folder / kind / name).write_text(text)


def sample_value(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent), matching the given labels."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def rendered(helm: Path, endpoints: Endpoints, topic: str, unique: str) -> Rendered:
    return helm_template(helm, set_values={
        "kafka.bootstrapServers": endpoints.kafka_bootstrap_servers.replace(",", "\\,"),
        "kafka.topics": "{" + topic + "}",
        "kafka.consumerGroup": f"helm-test-{unique}",
        "kafka.dlqTopic": f"{topic}.dlq",
        "temporal.address": endpoints.temporal_address,
        "temporal.taskQueue": f"helm-test-{unique}",
        "logFormat": "console",
    }, set_files=journeys_set_files())


@pytest.fixture
async def processes(rendered: Rendered, tmp_path: Path) -> AsyncIterator[dict[str, Process]]:
    _write_journeys(rendered, tmp_path / "journeys")
    running: dict[str, Process] = {}
    for component in ("worker", "consumer"):
        container = rendered.container(component)
        port = _free_port()
        env = _process_env(rendered, component, tmp_path, port)
        log = tmp_path / f"{component}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "eventflow.cli", *container["args"]], cwd=tmp_path,
                                     env=env, stdout=out, stderr=subprocess.STDOUT)
        running[component] = Process(component, popen, port, log, env)
    try:
        yield running
    finally:
        for process in running.values():
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait(10)


async def _ready(process: Process) -> str:
    async def check() -> str | None:
        assert process.popen.poll() is None, process.describe()
        status, body = await process.aget("/readyz")
        return body if status == 200 else None

    return str(await eventually(check, timeout_seconds=60, message=f"{process.component} /readyz"))


def _referenced(rendered_all_on: Rendered) -> dict[str, set[str]]:
    return {
        "dashboard": metric_names(dashboard_exprs(dashboard(rendered_all_on))),
        "alerts": metric_names(rule_exprs(prometheus_rules(rendered_all_on))),
    }


@pytest.fixture(scope="module")
def referenced(helm: Path) -> dict[str, set[str]]:
    return _referenced(helm_template(helm, values_files=[ALL_ON]))


async def _fail_one_workflow_task(client: Client, task_queue: str, workflow_id: str) -> None:
    # An argument the Journey workflow cannot decode fails its first workflow task, which is what
    # the "workflow task failures" alert watches (the SDK keeps retrying the task, not the workflow).
    await client.start_workflow("Journey", "not a journey input", id=workflow_id, task_queue=task_queue)


def _outbox(process: Process) -> Iterator[str]:
    path = Path(process.env["EVENTFLOW_CACHE_DIR"]) / "outbox.jsonl"
    yield from (path.read_text().splitlines() if path.exists() else [])


async def test_running_processes_expose_every_metric_the_dashboard_and_alerts_read(
        processes: dict[str, Process], referenced: dict[str, set[str]], kafka_config: dict[str, str],
        temporal_client: Client, topic: str, unique: str) -> None:
    consumer, worker = processes["consumer"], processes["worker"]
    consumer_ready = await _ready(consumer)
    worker_ready = await _ready(worker)
    assert "kafka=ok" in consumer_ready and "temporal=ok" in consumer_ready, consumer_ready
    assert worker_ready.strip(), "the worker's readiness says nothing"
    for process in (consumer, worker):
        assert await process.aget("/healthz") == (200, "ok\n")

    event = samples.purchase(samples.customer())
    producer = EventProducer(kafka_config, topic, load_schemas())
    producer.send(event)
    producer.send_raw(b"definitely not avro", key=b"poison")
    await producer.flush_async()
    workflow_id = f"broken-{unique}"
    await _fail_one_workflow_task(temporal_client, consumer.env["EVENTFLOW_TASK_QUEUE"], workflow_id)

    async def scraped_consumer() -> str | None:
        status, text = await consumer.aget("/metrics")
        started = sample_value(text, "eventflow_workflow_starts_total", journey="post_purchase")
        dead = sample_value(text, "eventflow_dead_letters_total", topic=topic)
        return text if status == 200 and started == 1 and dead == 1 else None

    consumer_text = str(await eventually(scraped_consumer, timeout_seconds=60, message="consumer counters"))
    order_id = event["payload"]["order_id"]
    await eventually(lambda: any(order_id in line for line in _outbox(worker)), timeout_seconds=60,
                     message="the thank-you email in the worker's outbox")

    # A delivery report and an exit for the journey, so its funnel counters have samples too.
    journey = temporal_client.get_workflow_handle(f"journey:post_purchase:{event['customer']['id']}:{order_id}")
    await journey.signal(DELIVERY_SIGNAL, DeliveryReport(
        idempotency_key=f"{journey.id}/thank_you", customer_id=event["customer"]["id"], channel="email",
        provider="outbox", outcome=DeliveryOutcome.DELIVERED, at=event["occurred_at"], workflow_id=journey.id,
        step_id="thank_you", report_id=f"report-{unique}"))
    producer.send(samples.event("OrderRefunded", event["customer"], {
        "order_id": order_id, "reason": None, "amount": {"amount": "1.00", "currency": "EUR"}}))
    await producer.flush_async()

    async def scraped_worker() -> str | None:
        status, text = await worker.aget("/metrics")
        sent = sample_value(text, "eventflow_notifications_sent_total", channel="email", outcome="sent")
        failed_task = "temporal_workflow_task_execution_failed" in text
        funnel = "eventflow_journey_exits_total" in text and "eventflow_journey_delivery_reports_total" in text
        return text if status == 200 and sent >= 1 and failed_task and funnel else None

    try:
        worker_text = str(await eventually(scraped_worker, timeout_seconds=30, message="worker metrics"))
    except AssertionError:
        worker_text = (await worker.aget("/metrics"))[1]
    finally:
        await temporal_client.get_workflow_handle(workflow_id).terminate("test over")

    for process in (consumer, worker):
        process.popen.send_signal(signal.SIGTERM)
    for process in (consumer, worker):
        code = await asyncio.to_thread(process.popen.wait, 60)
        assert code == 0, f"SIGTERM should drain and exit 0: {process.describe()}"

    assert sample_value(consumer_text, "eventflow_events_consumed_total", event_type="PurchaseCompleted") >= 1
    exposed = exposed_names(consumer_text) | exposed_names(worker_text)
    # The webhooks service's own series are checked against its process (tests/eventflow/webhooks/test_process.py).
    unchecked = exposed | PENDING | WEBHOOK_SERVICE_SERIES
    missing = {source: sorted(names - unchecked) for source, names in referenced.items() if names - unchecked}
    assert not missing, f"referenced but not exposed by a running consumer or worker: {missing}"
    arrived = sorted(PENDING & exposed)
    assert not arrived, f"the worker now exposes {arrived}: remove them from PENDING so they are checked"


async def test_consumer_is_live_but_not_ready_while_kafka_is_unreachable(
        helm: Path, endpoints: Endpoints, unique: str, tmp_path: Path) -> None:
    rendered = helm_template(helm, set_values={
        "kafka.bootstrapServers": "127.0.0.1:1",
        "kafka.consumerGroup": f"helm-dead-{unique}",
        "temporal.address": endpoints.temporal_address,
        "logFormat": "console",
    })
    port = _free_port()
    log = tmp_path / "consumer.log"
    env = _process_env(rendered, "consumer", tmp_path, port)
    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "eventflow.cli", "consume"], cwd=tmp_path, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    consumer = Process("consumer", popen, port, log, env)
    try:
        async def answered() -> tuple[int, str] | None:
            assert popen.poll() is None, consumer.describe()
            status, body = await consumer.aget("/readyz")
            return (status, body) if "kafka=" in body else None

        status, body = await eventually(answered, timeout_seconds=60, message="a readiness verdict")
        assert status == 503, body
        assert "kafka=unreachable" in body and "temporal=ok" in body, body
        assert await consumer.aget("/healthz") == (200, "ok\n"), "liveness must not depend on Kafka"
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(popen.wait, 60)
        finally:
            if popen.poll() is None:
                popen.kill()
