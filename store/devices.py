"""Customers' push devices in PostgreSQL: app installations (FCM tokens) and browser subscriptions.

Many per customer and channel, added and removed by ``DeviceRegistered``/``DeviceUnregistered``
events (the consumer, batched like profile writes) and by the device API of ``eventflow webhooks``,
and removed by the send activity when a provider reports one gone. A token or subscription
identifies a person's device, so it is stored sealed with the payload keys like the profile's
contact fields (`store.customers.FieldCipher`), and named everywhere else by its opaque
`activities.push.device_id`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from activities.push import Device, DeviceChange, normalised_device
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
        await self.apply_changes([DeviceChange(customer_id, channel, device)])
        return device

    async def apply_changes(self, changes: Sequence[DeviceChange]) -> None:
        """Applies registrations and removals in one statement (one round trip).

        Of several changes to one device the last in ``changes`` wins, as it would applied one by one
        (one statement may not touch a row twice). A registration without a platform keeps the one known.
        """
        last: dict[tuple[str, str, str], DeviceChange] = {}
        for change in changes:
            key = (change.customer_id, change.channel, change.device.device_id)
            last.pop(key, None)
            last[key] = change
        added = [change for change in last.values() if change.registered]
        removed = [change for change in last.values() if not change.registered]
        if not last:
            return
        sealed = [self._cipher.seal(change.customer_id, _field(change.channel, change.device.device_id),
                                    change.device.address) for change in added]
        async with timed(self._metrics, StatementKind.DEVICES):
            await self._pool.execute(
                "WITH removed AS ("
                " DELETE FROM eventflow.devices d USING unnest($1::text[], $2::text[], $3::text[]) AS r(c, ch, id)"
                " WHERE d.customer_id = r.c AND d.channel = r.ch AND d.device_id = r.id RETURNING 1)"
                " INSERT INTO eventflow.devices AS d (customer_id, channel, device_id, sealed, key_id, platform)"
                " SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])"
                " ON CONFLICT (customer_id, channel, device_id) DO UPDATE"
                " SET sealed = EXCLUDED.sealed, key_id = EXCLUDED.key_id,"
                " platform = CASE WHEN EXCLUDED.platform <> '' THEN EXCLUDED.platform ELSE d.platform END",
                [c.customer_id for c in removed], [c.channel for c in removed], [c.device.device_id for c in removed],
                [c.customer_id for c in added], [c.channel for c in added], [c.device.device_id for c in added],
                [s["v"] for s in sealed], [s["k"] for s in sealed], [c.device.platform for c in added])

    async def remove_device(self, customer_id: str, channel: str, device_id: str) -> bool:
        """Forgets one device; True when it was registered."""
        async with timed(self._metrics, StatementKind.DEVICES):
            removed = await self._pool.fetchval(
                "DELETE FROM eventflow.devices WHERE customer_id = $1 AND channel = $2 AND device_id = $3"
                " RETURNING true", customer_id, channel, device_id)
        return bool(removed)

    async def devices(self, customer_id: str, channel: str) -> Sequence[Device]:
        """The customer's devices on ``channel``, oldest registration first, opened."""
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
