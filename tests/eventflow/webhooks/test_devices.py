"""The device API of ``eventflow webhooks`` on a real PostgreSQL: idempotent add and remove, and 401 for anything else.

Devices go straight to the customer store; the tests read them back through `StoreDevices`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from activities.push import device_id
from core.codec import Keyring
from eventflow.webhooks import KafkaHandoff, WebhookMetrics, WebhookServer
from eventflow.webhooks.devices import DeviceApi
from store import CustomerStore, FieldCipher, StoreDevices
from store.forgetting import forget
from tests.eventflow.webhooks.conftest import free_port
from tests.store.conftest import store_dsn, store_pool

__all__ = ["store_dsn", "store_pool"]

TOKEN = "t" * 40
ROTATED = "r" * 40
CIPHER = FieldCipher(Keyring({"k1": b"\x03" * 32}, "k1"))
_SUBSCRIPTION = {"endpoint": "https://push.example.net/send/abc-secret", "keys": {"p256dh": "BPk", "auth": "c2Vj"}}


@dataclass
class DeviceClient:
    url: str
    http: aiohttp.ClientSession
    registry: CollectorRegistry

    async def call(self, method: str, customer: str, body: Any, token: str | None = TOKEN) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.request(method, f"{self.url}/customers/{customer}/devices", data=data,
                                     headers=headers) as response:
            return response.status, await response.text()

    def requests(self, result: str) -> float:
        return self.registry.get_sample_value("eventflow_webhook_requests_total",
                                              {"kind": "devices", "result": result}) or 0.0


@pytest.fixture(scope="module")
def kafka_handoff(kafka_config: dict[str, str]) -> KafkaHandoff:
    # Never used by the device API; the server needs one for the provider routes.
    return KafkaHandoff(kafka_config, "unused-device-api-tests")


async def _serve(handoff: KafkaHandoff, api: DeviceApi | None) -> tuple[WebhookServer, CollectorRegistry]:
    registry = CollectorRegistry()
    server = WebhookServer(handoff, WebhookMetrics(registry), sendgrid=None, twilio=None, host="127.0.0.1",
                           port=free_port(), devices=api)
    await server.start()
    return server, registry


@pytest.fixture
async def client(store_pool: asyncpg.Pool, kafka_handoff: KafkaHandoff) -> AsyncIterator[DeviceClient]:
    api = DeviceApi(StoreDevices(store_pool, CIPHER), CustomerStore(store_pool, CIPHER), [TOKEN, ROTATED])
    server, registry = await _serve(kafka_handoff, api)
    try:
        async with aiohttp.ClientSession() as http:
            yield DeviceClient(f"http://127.0.0.1:{server.port}", http, registry)
    finally:
        await server.stop()


async def _devices(pool: asyncpg.Pool, customer: str, channel: str) -> list[str]:
    return [d.address for d in await StoreDevices(pool, CIPHER).devices(customer, channel)]


async def test_a_device_is_added_once_however_often_posted_and_removed_by_delete(
        client: DeviceClient, store_pool: asyncpg.Pool) -> None:
    customer = f"c/{uuid.uuid4().hex}"  # a slash in an id survives percent-encoding
    quoted = customer.replace("/", "%2F")
    app = {"channel": "push", "token": "fcm-token-1", "platform": "android"}
    browser = {"channel": "webpush", "subscription": _SUBSCRIPTION, "platform": "web"}

    for body in (app, app, browser, browser):
        status, text = await client.call("POST", quoted, body, token=ROTATED if body is browser else TOKEN)
        assert status == 200, text
    assert json.loads(text) == {"channel": "webpush", "device_id": device_id("webpush", json.dumps(_SUBSCRIPTION))}
    assert await _devices(store_pool, customer, "push") == ["fcm-token-1"]
    [stored] = await _devices(store_pool, customer, "webpush")
    assert json.loads(stored) == _SUBSCRIPTION

    for _ in range(2):
        assert (await client.call("DELETE", quoted, browser))[0] == 204
    assert await _devices(store_pool, customer, "webpush") == []
    assert await _devices(store_pool, customer, "push") == ["fcm-token-1"]
    assert client.requests("registered") == 4 and client.requests("removed") == 2


@pytest.mark.parametrize("token", [None, "wrong" * 8, TOKEN[:-1], f"{TOKEN} extra"])
async def test_a_request_without_the_token_is_refused_alike_and_changes_nothing(
        client: DeviceClient, store_pool: asyncpg.Pool, token: str | None) -> None:
    customer = uuid.uuid4().hex
    answers = {await client.call("POST", customer, {"channel": "push", "token": "tok"}, token=token),
               await client.call("DELETE", customer, {"channel": "push", "token": "tok"}, token=token),
               await client.call("POST", customer, b"{not json", token=token),
               await client.call("PUT", customer, b"", token=token)}
    assert answers == {(401, "unauthorized\n")}
    assert await _devices(store_pool, customer, "push") == []


async def test_without_tokens_or_a_store_every_request_is_refused(kafka_handoff: KafkaHandoff,
                                                                   store_pool: asyncpg.Pool) -> None:
    no_tokens = DeviceApi(StoreDevices(store_pool, CIPHER), CustomerStore(store_pool, CIPHER), [])
    for api in (no_tokens, None):
        server, _ = await _serve(kafka_handoff, api)
        try:
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{server.port}/customers/c1/devices", json={"channel": "push", "token": "t"},
                    headers={"Authorization": "Bearer "}) as response:
                assert (response.status, await response.text()) == (401, "unauthorized\n")
        finally:
            await server.stop()


async def test_a_bad_body_is_named_without_echoing_it_and_a_forgotten_customer_gets_no_device(
        client: DeviceClient, store_pool: asyncpg.Pool) -> None:
    customer = uuid.uuid4().hex
    keyless = {"channel": "webpush", "subscription": {"endpoint": _SUBSCRIPTION["endpoint"]}}
    status, text = await client.call("POST", customer, keyless)
    assert status == 400 and "keys.p256dh" in text and "abc-secret" not in text
    status, text = await client.call("POST", customer, {"channel": "sms", "token": "secret-tok"})
    assert status == 400 and "channel" in text and "secret-tok" not in text
    assert (await client.call("POST", customer, {"channel": "push"}))[0] == 400

    # Known only by a device, the customer is still someone to forget (and tombstone).
    assert (await client.call("POST", customer, {"channel": "push", "token": "tok-before-forget"}))[0] == 200
    assert (await forget(store_pool, customer)).known
    status, _ = await client.call("POST", customer, {"channel": "push", "token": "tok-after-forget"})
    assert status == 409 and await _devices(store_pool, customer, "push") == []
