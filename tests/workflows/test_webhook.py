"""The ``webhook`` step on a real Temporal server against a local HTTP server (aiohttp), sends at the provider stub."""

from __future__ import annotations

import base64
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.metrics import SendMetrics
from activities.webhook import IDEMPOTENCY_HEADER, WebhookActivities, WebhookCallInput, WebhookErrorType, WebhookSecrets
from tests.activities.journey_support import channels_for, event, journey
from tests.activities.provider_stub import ProviderStub, provider
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.worker import JourneyWorkers, build_worker

__all__ = ["provider"]

SECRET = "Bearer s3cr3t-crm-token-91f2"
TIER_TEMPLATE = {"id": "tier", "default_locale": "en",
                 "variants": {"sms": {"en": {"body": "Your tier: {{ webhooks.crm.tier }} ({{ payload.order_id }})"}}}}
FAST_RETRY = {"max_attempts": 4, "initial_interval": "1s", "max_interval": "1s"}


@dataclass
class Crm:
    """The other system: answers scripted statuses, then ``{"tier": "gold"}``; records every request."""

    statuses: deque[int] = field(default_factory=deque)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.statuses:
            return web.json_response({"error": "scripted"}, status=self.statuses.popleft())
        return web.json_response({"tier": "gold", "id": request.match_info["customer"]})


@pytest.fixture
async def crm() -> AsyncIterator[Crm]:
    server = Crm()
    app = web.Application()
    app.router.add_route("*", "/crm/{customer}", server.handle)
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * 5000 + b"1]")

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="not json")

    async def huge_json(_: web.Request) -> web.Response:
        return web.json_response({"tier": "gold", "pad": "p4d" * 700})

    app.router.add_get("/big", big)
    app.router.add_get("/huge/{customer}", huge_json)
    app.router.add_get("/text", text)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def _activities(tmp_path: Path, crm: Crm) -> WebhookActivities:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "crm_token").write_text(SECRET + "\n")
    local = crm.base_url.removeprefix("http://")  # 127.0.0.1:<port>
    return WebhookActivities([local], WebhookSecrets(secrets, {}), secret_hosts={"crm_token": [local], "not_configured": [local]},
                             max_saved_bytes=1024, allow_loopback=True)


def _worker(client: Client, queue: str, provider: ProviderStub, tmp_path: Path, crm: Crm) -> JourneyWorkers:
    return build_worker(client, queue, channels_for(provider.base_url), metrics=SendMetrics(CollectorRegistry()),
                        webhooks=_activities(tmp_path, crm))


def _snapshot(url: str, **options: Any) -> dict[str, Any]:
    webhook = {"method": "POST", "url": url, "headers": [{"name": "Authorization", "secret": "crm_token"}],
               "body": '{"order": "{{ payload.order_id }}"}', "save_as": "crm", "retry": FAST_RETRY, **options}
    tell = {"id": "tell", "send": {"channel": "sms", "template": "tier"}}
    snapshot = journey([{"id": "enrich", "webhook": webhook},
                        {"id": "vip", "branch": {"cases": [{"when": "webhooks.crm.tier == 'gold'", "steps": [tell]}]}}])
    return {**snapshot, "templates": {"tier": TIER_TEMPLATE}}


async def _run(client: Client, queue: str, snapshot: dict[str, Any]) -> tuple[str, JourneyStatus]:
    workflow_id = f"webhook-{uuid.uuid4().hex[:10]}"
    status = await client.execute_workflow(JOURNEY_WORKFLOW, JourneyInput(snapshot, event(f"c-{workflow_id}")),
                                           id=workflow_id, task_queue=queue, result_type=JourneyStatus)
    return workflow_id, status


async def test_the_response_reaches_the_next_send_after_retries_on_503_with_one_idempotency_key(
        temporal_client: Client, provider: ProviderStub, crm: Crm, tmp_path: Path) -> None:
    crm.statuses.extend([503, 503])
    queue = f"webhook-{uuid.uuid4().hex[:8]}"
    async with _worker(temporal_client, queue, provider, tmp_path, crm):
        workflow_id, status = await _run(temporal_client, queue, _snapshot(f"{crm.base_url}/crm/{{{{ customer.id }}}}"))

    assert [r.outcome for r in status.webhooks] == ["ok:200"]
    assert len(crm.requests) == 3  # two 503s retried, then the answer
    assert {headers[IDEMPOTENCY_HEADER] for _, headers, _ in crm.requests} == {f"{workflow_id}/enrich"}
    assert all(headers["Authorization"] == SECRET for _, headers, _ in crm.requests)
    assert json.loads(crm.requests[0][2]) == {"order": "ord-42"}
    assert crm.requests[0][0] == f"/crm/c-{workflow_id}"
    (sms,) = provider.sends()
    assert sms.body["Body"] == "Your tier: gold (ord-42)"
    assert [s.outcome for s in status.sends] == ["sent"]
    history = _history_text((await temporal_client.get_workflow_handle(workflow_id).fetch_history()).to_json_dict())
    assert "s3cr3t-crm-token-91f2" not in history
    assert '"crm_token"' in history and '"tier":"gold"' in history  # payloads decoded: the search can hit


async def test_a_400_is_not_retried_and_exit_on_failure_ends_the_journey(
        temporal_client: Client, provider: ProviderStub, crm: Crm, tmp_path: Path) -> None:
    crm.statuses.append(400)
    queue = f"webhook-{uuid.uuid4().hex[:8]}"
    async with _worker(temporal_client, queue, provider, tmp_path, crm):
        _, status = await _run(temporal_client, queue, _snapshot(f"{crm.base_url}/crm/x", on_failure="exit"))

    assert len(crm.requests) == 1
    assert [r.outcome for r in status.webhooks] == [f"failed:{WebhookErrorType.REJECTED}"]
    assert status.exit_reason == f"webhook enrich failed: {WebhookErrorType.REJECTED}"
    assert provider.sends() == [] and status.sends == []


async def test_a_host_outside_the_allow_list_is_refused_and_recorded(
        temporal_client: Client, provider: ProviderStub, crm: Crm, tmp_path: Path) -> None:
    queue = f"webhook-{uuid.uuid4().hex[:8]}"
    outside = crm.base_url.replace("127.0.0.1", "localhost")  # the same server, under a name not allowed
    async with _worker(temporal_client, queue, provider, tmp_path, crm):
        _, status = await _run(temporal_client, queue, _snapshot(f"{outside}/crm/x"))

    assert crm.requests == []
    assert [r.outcome for r in status.webhooks] == [f"failed:{WebhookErrorType.HOST_NOT_ALLOWED}"]
    note = next(v.note for v in status.trail if v.step_id == "enrich")
    assert note == f"failed:{WebhookErrorType.HOST_NOT_ALLOWED}"
    # on_failure continue: the journey goes on without the response, so the condition on it is false.
    assert status.exit_reason is None and status.finished
    assert next(v.note for v in status.trail if v.step_id == "vip") == "else"
    assert status.sends == [] and provider.sends() == []


def _history_text(node: Any) -> str:
    """The history's JSON with every payload's base64 ``data`` decoded in place, so a search sees it."""
    match node:
        case {"metadata": dict(), "data": str(data)}:
            return base64.b64decode(data).decode(errors="replace")
        case dict():
            return "{" + ", ".join(f"{k}: {_history_text(v)}" for k, v in node.items()) + "}"
        case list():
            return "[" + ", ".join(_history_text(v) for v in node) + "]"
    return json.dumps(node)


def _call(url: str, **options: Any) -> WebhookCallInput:
    return WebhookCallInput(idempotency_key="wf/s", workflow_id="wf", journey_id="j", step_id="s", method="GET",
                            url_template=url, context={}, **options)


@pytest.mark.parametrize("path, options, error_type", [
    ("/big", {"max_response_bytes": 1000}, WebhookErrorType.RESPONSE_TOO_LARGE),
    ("/text", {"expect_json": True}, WebhookErrorType.RESPONSE_NOT_JSON),
    ("/crm/x", {"secret_headers": {"X-Key": "not_configured"}}, WebhookErrorType.SECRET_MISSING),
    ("/crm/{{ nope.x }}", {}, WebhookErrorType.TEMPLATE),
    (":99999/x", {}, WebhookErrorType.BAD_URL),
])
async def test_final_failures_of_one_attempt(crm: Crm, tmp_path: Path, path: str, options: dict[str, Any],
                                            error_type: str) -> None:
    from temporalio.exceptions import ApplicationError

    base = crm.base_url.rsplit(":", 1)[0] if path.startswith(":") else crm.base_url
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(_activities(tmp_path, crm).call_webhook, _call(base + path, **options))

    assert raised.value.type == error_type and raised.value.non_retryable
    assert "gold" not in str(raised.value) and SECRET not in str(raised.value)


async def test_429_and_5xx_are_retryable_and_a_plain_body_is_ignored_when_not_saved(crm: Crm, tmp_path: Path) -> None:
    from temporalio.exceptions import ApplicationError

    activities = _activities(tmp_path, crm)
    for code in (429, 500, 408):
        crm.statuses.append(code)
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(activities.call_webhook, _call(f"{crm.base_url}/crm/x"))
        assert raised.value.type == WebhookErrorType.UNAVAILABLE and not raised.value.non_retryable, code
    result = await ActivityEnvironment().run(activities.call_webhook, _call(f"{crm.base_url}/text"))
    assert result.status_code == 200 and result.data is None


async def test_a_response_too_large_to_save_fails_the_step_and_is_never_carried_on(
        temporal_client: Client, provider: ProviderStub, crm: Crm, tmp_path: Path) -> None:
    queue = f"webhook-{uuid.uuid4().hex[:8]}"
    async with _worker(temporal_client, queue, provider, tmp_path, crm):
        workflow_id, status = await _run(temporal_client, queue, _snapshot(f"{crm.base_url}/huge/x", method="GET"))

    assert [r.outcome for r in status.webhooks] == [f"failed:{WebhookErrorType.SAVED_TOO_LARGE}"]
    assert next(v.note for v in status.trail if v.step_id == "vip") == "else"  # webhooks.crm was never saved
    history = _history_text((await temporal_client.get_workflow_handle(workflow_id).fetch_history()).to_json_dict())
    assert "p4dp4d" not in history
