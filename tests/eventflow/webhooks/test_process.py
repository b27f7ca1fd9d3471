"""``eventflow webhooks`` as a real process: settings from the environment, ready only with Kafka and
Temporal, a signed report through the receiver and its own feedback consumer into the ledger, metrics
on the ops port, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from consumer.topics import ensure_topics
from devstack import Endpoints, tools
from tests.activities.journey_support import event, journey, run_journey, send, worker
from tests.activities.provider_stub import ProviderStub
from tests.eventflow.webhooks.conftest import channels, free_port
from tests.eventflow.webhooks.signing import TWILIO_TOKEN, SendGridSigner, sendgrid_body, sendgrid_event
from tests.harness import eventually
from tests.helm.chart import (
    ALL_ON,
    WEBHOOK_SERVICE_SERIES,
    dashboard,
    dashboard_exprs,
    exposed_names,
    helm_template,
    metric_names,
    prometheus_rules,
    rule_exprs,
)
from workflows.preferences_client import preferences_state

REPO = Path(__file__).resolve().parents[3]


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        return response.status


async def _ready(url: str) -> bool:
    return (await _get(url))[0] == 200


@pytest.mark.timeout(60)
async def test_the_webhooks_command_serves_applies_and_stops_cleanly(
        endpoints: Endpoints, kafka_config: dict[str, str], provider: ProviderStub, unique: str,
        tmp_path: Path) -> None:
    from temporalio.client import Client

    client = await Client.connect(endpoints.temporal_address)
    topic, queue, customer, workflow_id = f"feedback-{unique}", f"q-{unique}", f"c-{unique}", f"journey:p:{unique}"
    await asyncio.to_thread(ensure_topics, kafka_config, [topic], partitions=1)
    signer = SendGridSigner()
    hooks_port, ops_port = free_port(), free_port()
    public = f"http://127.0.0.1:{hooks_port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "KAFKA_", "TEMPORAL_"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
                "TEMPORAL_ADDRESS": endpoints.temporal_address, "EVENTFLOW_TASK_QUEUE": queue,
                "EVENTFLOW_FEEDBACK_TOPIC": topic, "EVENTFLOW_FEEDBACK_CONSUMER_GROUP": f"g-{unique}",
                "EVENTFLOW_WEBHOOKS_PORT": str(hooks_port), "EVENTFLOW_METRICS_PORT": str(ops_port),
                "EVENTFLOW_WEBHOOKS_PUBLIC_URL": public, "SENDGRID_WEBHOOK_VERIFICATION_KEY": signer.verification_key,
                "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "EVENTFLOW_CACHE_DIR": str(tmp_path / "cache"),
                "PYTHONPATH": str(REPO)})
    log = tmp_path / "webhooks.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "eventflow.cli", "webhooks"], cwd=REPO, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        async with worker(client, queue, channels(provider.base_url, public)):
            await run_journey(client, queue, journey([send("note", "email")]), event(customer), workflow_id)
            args = provider.sends()[0].body["custom_args"]
            await eventually(lambda: _ready(f"http://127.0.0.1:{ops_port}/readyz"), timeout_seconds=30,
                             message="readiness")
            body = sendgrid_body([sendgrid_event("click", args, event_id=f"c-{unique}")])
            status = await _post(f"{public}/sendgrid/events", body, signer.headers(body))
            assert status == 200

            async def clicked() -> bool:
                return (await preferences_state(client, customer)).ledger[f"{workflow_id}/note"].outcome == "clicked"

            await eventually(clicked, message="the report applied by the process's feedback consumer")
            _, metrics = await _get(f"http://127.0.0.1:{ops_port}/metrics")
            assert 'eventflow_delivery_reports_total{channel="email",outcome="clicked",provider="sendgrid"} 1.0' \
                in metrics
            assert 'eventflow_feedback_records_total{kind="report",result="applied"} 1.0' in metrics
            # What the chart's dashboard and alerts read from this service is what it serves.
            rendered = await asyncio.to_thread(helm_template, tools.helm(), values_files=[ALL_ON])
            read = metric_names(dashboard_exprs(dashboard(rendered))) | metric_names(rule_exprs(prometheus_rules(rendered)))
            assert read & WEBHOOK_SERVICE_SERIES, "the dashboard and alerts read nothing of the webhooks service"
            assert (read & WEBHOOK_SERVICE_SERIES) <= exposed_names(metrics), sorted(
                (read & WEBHOOK_SERVICE_SERIES) - exposed_names(metrics))
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0, log.read_text()[-3000:]
