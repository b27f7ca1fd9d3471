"""DeviceRegistered / DeviceUnregistered on Kafka change the customer's devices in the store; a push then reaches them.

The consumer writes the device (batched, no Temporal call) before a journey the same event starts,
so a journey triggered by the registration already finds the browser; the Web Push stub decrypts
what it got. Journeys see the event without the subscription.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from activities.push_webpush import WebPushChannel, WebPushConfig
from consumer.dead_letter import parse_dead_letter_headers
from consumer.dispatch import Dispatcher
from core.codec import Keyring
from events import samples
from journeys.loader import load_all
from store import CustomerBatcher, CustomerStore, FieldCipher, PostgresLedger, StoreDevices
from tests.activities.push_stubs import PushStub, push_stub, vapid_key_pem
from tests.harness import Bridge, eventually, read_topic, start_bridge

__all__ = ["push_stub"]

KEYRING = Keyring({"k1": b"\x02" * 32}, "k1")

_DEFINITION = """
id: device_welcome
version: 1
description: A browser push as soon as a browser is registered.
trigger:
  event: DeviceRegistered
  filter: "payload.channel == 'WEBPUSH'"
entry:
  rule: every_time
steps:
  - id: hello
    send:
      channel: webpush
      template: device_hello
"""
_TEMPLATE = """
id: device_hello
default_locale: en
channels:
  webpush:
    en:
      title: "Notifications are on"
      body: "We will tell you when your order ships ({{ payload.platform }})."
      link: "https://shop.example.com/orders"
"""


@pytest.fixture
def journeys_dir(tmp_path: Path) -> Path:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "device_welcome.yaml").write_text(_DEFINITION)
    (tmp_path / "templates" / "device_hello.yaml").write_text(_TEMPLATE)
    return tmp_path


@pytest.fixture
async def device_bridge(kafka_config: dict[str, str], temporal_client: Client, topic: str, outbox: Path, unique: str,
                        store_pool: asyncpg.Pool, push_stub: PushStub, journeys_dir: Path) -> AsyncIterator[Bridge]:
    cipher = FieldCipher(KEYRING)
    store, devices = CustomerStore(store_pool, cipher), StoreDevices(store_pool, cipher)
    pem, push_stub.vapid_public_key = vapid_key_pem()
    running = await start_bridge(
        kafka_config=kafka_config, client=temporal_client, topic=topic, outbox=outbox, suffix=unique,
        definitions=load_all(journeys_dir),
        dispatcher=Dispatcher(temporal_client, f"test-journeys-{unique}", CustomerBatcher(store, devices)),
        ledger=PostgresLedger(store_pool), contacts=store, devices=devices,
        channels={"webpush": WebPushChannel(WebPushConfig(pem, "mailto:ops@example.com"))})
    try:
        yield running
    finally:
        await running.stop()


def _device_event(event_type: str, customer: dict[str, Any], address: str, **extra: str) -> dict[str, Any]:
    return samples.event(event_type, customer, {"channel": "WEBPUSH", "address": address, **extra})


async def test_a_registered_browser_gets_the_push_and_an_unregistered_one_is_gone(
        device_bridge: Bridge, push_stub: PushStub, store_pool: asyncpg.Pool, temporal_client: Client) -> None:
    customer = samples.customer()
    browser = push_stub.browser()
    registered = _device_event("DeviceRegistered", customer, browser.subscription(), platform="web")

    await device_bridge.publish(registered, registered)

    shown = await eventually(lambda: push_stub.webpush.get(browser.sub_id), message="the web push")
    assert [(m["title"], m["body"], m["link"]) for m in shown] == [
        ("Notifications are on", "We will tell you when your order ships (web).", "https://shop.example.com/orders")]
    sealed = await store_pool.fetchval("SELECT sealed FROM eventflow.devices WHERE customer_id = $1", customer["id"])
    assert browser.endpoint not in sealed, "the subscription is stored encrypted"
    handle = temporal_client.get_workflow_handle(f"journey:device_welcome:{customer['id']}:event:{registered['event_id']}")
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    assert browser.sub_id not in history, "the journey never saw the subscription"

    await device_bridge.publish(_device_event("DeviceUnregistered", customer, browser.subscription()))
    devices = StoreDevices(store_pool, FieldCipher(KEYRING))

    async def removed() -> bool:
        return not await devices.devices(customer["id"], "webpush")

    await eventually(removed, message="the browser to be removed")
    assert len(push_stub.webpush[browser.sub_id]) == 1


async def test_a_subscription_without_keys_is_dead_lettered_naming_the_field_not_the_endpoint(
        device_bridge: Bridge, kafka_config: dict[str, str], topic: str, store_pool: asyncpg.Pool) -> None:
    customer = samples.customer()
    endpoint = "https://push.example.com/secret-endpoint-123"
    await device_bridge.publish(_device_event("DeviceRegistered", customer, json.dumps({"endpoint": endpoint})))

    [record] = await asyncio.to_thread(read_topic, kafka_config, f"{topic}.dlq", expected=1)
    dead = parse_dead_letter_headers(record.headers())
    assert dead["error_type"] == "InvalidDevice", dead
    assert "keys.p256dh" in dead["error_message"] and endpoint not in json.dumps(dead)
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.devices WHERE customer_id = $1",
                                     customer["id"]) == 0
