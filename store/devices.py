"""Customers' push devices in PostgreSQL: app installations (FCM tokens) and browser subscriptions.

Many per customer and channel, added and removed by the registration API of ``eventflow webhooks``
(and removed by the send activity when a provider reports one gone). A token or subscription
identifies a person's device, so it is stored sealed with the payload keys like the profile's
contact fields (`store.customers.FieldCipher`), and named everywhere else by its opaque
`activities.push.device_id`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from activities.push import Device, normalised_device
from core.vocabulary import ADDRESS_FIELD, ChannelName
from store.customers import FieldCipher
from store.metrics import StatementKind, StoreMetrics, timed


def _field(channel: str, device_id: str) -> str:
    """The name a device's token is sealed under (bound into the AES-GCM associated data)."""
    return f"{ADDRESS_FIELD[ChannelName(channel)]}/{device_id}"


class StoreDevices:
    """The `activities.push.DeviceDirectory` in the customer store, and the registration writes."""

    def __init__(self, pool: asyncpg.Pool, cipher: FieldCipher | None = None, *,
                 metrics: StoreMetrics | None = None) -> None:
        self._pool = pool
        self._cipher = cipher or FieldCipher(None)
        self._metrics = metrics

    async def add_device(self, customer_id: str, channel: str, address: str, platform: str = "") -> Device:
        """Registers (or re-registers, with its latest token or keys) one device; raises `InvalidDevice`."""
        device = normalised_device(channel, address, platform)
        sealed = self._cipher.seal(customer_id, _field(channel, device.device_id), device.address)
        async with timed(self._metrics, StatementKind.DEVICES):
            await self._pool.execute(
                "INSERT INTO eventflow.devices (customer_id, channel, device_id, sealed, key_id, platform)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id, channel, device_id) DO UPDATE"
                " SET sealed = EXCLUDED.sealed, key_id = EXCLUDED.key_id, platform = EXCLUDED.platform",
                customer_id, channel, device.device_id, sealed["v"], sealed["k"], platform)
        return device

    async def remove_device(self, customer_id: str, channel: str, device_id: str) -> bool:
        async with timed(self._metrics, StatementKind.DEVICES):
            removed = await self._pool.fetchval(
                "DELETE FROM eventflow.devices WHERE customer_id = $1 AND channel = $2 AND device_id = $3"
                " RETURNING true", customer_id, channel, device_id)
        return bool(removed)

    async def devices(self, customer_id: str, channel: str) -> Sequence[Device]:
        async with timed(self._metrics, StatementKind.DEVICES):
            rows = await self._pool.fetch(
                "SELECT device_id, sealed, key_id, platform FROM eventflow.devices"
                " WHERE customer_id = $1 AND channel = $2 ORDER BY created_at, device_id", customer_id, channel)
        found = []
        for row in rows:
            address = self._cipher.open(customer_id, _field(channel, row["device_id"]),
                                        {"v": row["sealed"], "k": row["key_id"]})
            if address:
                found.append(Device(row["device_id"], address, row["platform"]))
        return found
