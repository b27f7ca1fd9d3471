"""Customer profiles, consent, suppressions and tombstones in PostgreSQL.

A profile is one row of ``eventflow.customers`` whose ``fields`` hold, per field (``email``,
``attributes.tier``), the value and the event that set it (``t`` occurred-at, ``e`` event id).
An update wins a field only when it occurred later (ties broken by event id), the rule of
`workflows.profile.apply_update`, applied in SQL (``eventflow.merge_fields``) so concurrent writers
and redelivered or out-of-order events converge to the same row. Contact fields (email, phone,
whatsapp, first name) are AES-GCM encrypted with the payload keys (``k`` names the key; ``""``
when no keys are configured, which only development allows), and each address is also indexed by
its keyed hash (`activities.addresses.AddressHasher`, the same function the suppressions and
STOPs use) so a bounce or a STOP finds its customers without decrypting anything.

The consumer reaches this module through `CustomerBatcher`: the lookups and writes of the records
in flight at one moment go to the database together, one round trip per batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from activities.addresses import UNKEYED, AddressHasher
from activities.contact import ContactPoints
from activities.push import DeviceChange
from core.codec import NONCE_BYTES, Keyring
from events.model import CustomerEvent, JsonValue
from store.errors import DevicesNotStoredError
from store.journey_instances import JourneyEntry, JourneyInstances
from store.ledger import set_consent
from store.metrics import StatementKind, StoreMetrics, timed
from workflows.profile import PROFILE_FIELDS, ProfileUpdate

#: Fields that identify a person: stored encrypted, never in clear.
SECRET_FIELDS = frozenset({"email", "phone", "whatsapp", "first_name"})
#: The profile field each channel's address is read from, for the address index.
_ADDRESS_FIELDS = {"email": "email", "phone": "sms", "whatsapp": "whatsapp"}
_ATTRIBUTE = "attributes."
_AAD = b"eventflow-field/v1\x00"

K = TypeVar("K")
V = TypeVar("V")


class FieldCipher:
    """Encrypts one profile field with the encrypting payload key, bound to its customer and field name."""

    def __init__(self, keyring: Keyring | None) -> None:
        self._keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()} if keyring else {}

    def seal(self, customer_id: str, name: str, value: str) -> dict[str, str]:
        if self._keyring is None:
            return {"v": value, "k": ""}
        key_id = self._keyring.encrypt_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, value.encode(), _aad(key_id, customer_id, name))
        return {"v": base64.b64encode(nonce + sealed).decode(), "k": key_id}

    def open(self, customer_id: str, name: str, stored: Mapping[str, Any]) -> str | None:
        key_id = str(stored.get("k") or "")
        value = stored.get("v")
        if value is None:
            return None
        if not key_id:
            return str(value)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise LookupError(f"profile field {name!r} is encrypted with key {key_id!r}, which is not configured")
        raw = base64.b64decode(str(value))
        return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key_id, customer_id, name)).decode()


def _aad(key_id: str, customer_id: str, name: str) -> bytes:
    return b"\x00".join((_AAD, key_id.encode(), customer_id.encode(), name.encode()))


def _stamp_time(occurred_at: str) -> str:
    """``occurred_at`` as UTC ISO 8601, the form the merge compares; unreadable times sort first."""
    try:
        moment = datetime.fromisoformat(occurred_at)
    except ValueError:
        return "0001-01-01T00:00:00.000000+00:00"
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def update_fields(customer_id: str, update: ProfileUpdate, cipher: FieldCipher) -> dict[str, dict[str, Any]]:
    """The ``fields`` an update writes, each with its stamp; contact fields sealed."""
    stamp = {"t": _stamp_time(update.occurred_at), "e": update.event_id}
    fields: dict[str, dict[str, Any]] = {}
    for name in PROFILE_FIELDS:
        value = getattr(update, name)
        if value is None:
            continue
        stored: dict[str, Any] = cipher.seal(customer_id, name, str(value)) if name in SECRET_FIELDS else {"v": value}
        fields[name] = {**stored, **stamp}
    for name, value in update.attributes.items():
        fields[_ATTRIBUTE + name] = {"v": value, **stamp}
    return fields


def _merge(current: dict[str, dict[str, Any]], incoming: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same rule as ``eventflow.merge_fields``, for several updates of one customer in one batch."""
    for name, value in incoming.items():
        held = current.get(name)
        if held is None or (value["t"], value["e"]) > (held["t"], held["e"]):
            current[name] = value
    return current


@dataclass(frozen=True)
class ProfileWrite:
    """One event's profile update, ready for the batch."""

    customer_id: str
    #: None: nothing to write, only the tombstone check (`CustomerStore.apply_unless_forgotten`).
    update: ProfileUpdate | None


class CustomerStore:
    """Profiles, consent, suppressions and tombstones on one pool."""

    def __init__(self, pool: asyncpg.Pool, cipher: FieldCipher | None = None, *,
                 metrics: StoreMetrics | None = None, hasher: AddressHasher = UNKEYED) -> None:
        self._pool = pool
        self._hasher = hasher
        self._cipher = cipher or FieldCipher(None)
        self._metrics = metrics

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def metrics(self) -> StoreMetrics | None:
        return self._metrics

    async def apply_profile_updates(self, writes: Sequence[ProfileWrite]) -> None:
        """Folds every update in, in one statement (one round trip), plus the address index."""
        await self._apply(writes, check_tombstones=False)

    async def apply_unless_forgotten(self, writes: Sequence[ProfileWrite]) -> set[str]:
        """Folds in the updates of customers without a tombstone and returns the others (not written).

        The tombstone check and the writes are one statement; a write without an update only checks."""
        return await self._apply(writes, check_tombstones=True)

    async def _apply(self, writes: Sequence[ProfileWrite], *, check_tombstones: bool) -> set[str]:
        merged: dict[str, dict[str, dict[str, Any]]] = {}
        index: set[tuple[str, str, str]] = set()
        for write in writes:
            if write.update is None:
                continue
            fields = update_fields(write.customer_id, write.update, self._cipher)
            merged[write.customer_id] = _merge(merged.get(write.customer_id, {}), fields)
            for name, channel in _ADDRESS_FIELDS.items():
                address = getattr(write.update, name)
                hashed = self._hasher.hash(channel, address) if address else ""
                if hashed:
                    index.add((channel, hashed, write.customer_id))
        check_ids = list({write.customer_id for write in writes}) if check_tombstones else []
        if not merged and not check_ids:
            return set()
        ids = list(merged)
        payloads = [json.dumps(merged[customer_id]) for customer_id in ids]
        channels, hashes, owners = (list(column) for column in zip(*index, strict=True)) if index else ([], [], [])
        async with timed(self._metrics, StatementKind.PROFILE_BATCH):
            rows = await self._pool.fetch(
                "WITH forgotten AS (SELECT customer_id FROM eventflow.tombstones WHERE customer_id = ANY($6::text[])),"
                " upserted AS ("
                " INSERT INTO eventflow.customers AS c (customer_id, fields)"
                " SELECT id, f::jsonb FROM unnest($1::text[], $2::text[]) AS u(id, f)"
                " WHERE id NOT IN (SELECT customer_id FROM forgotten)"
                " ON CONFLICT (customer_id) DO UPDATE SET fields = eventflow.merge_fields(c.fields, EXCLUDED.fields),"
                " updated_at = now() RETURNING 1),"
                " indexed AS ("
                " INSERT INTO eventflow.address_index (channel, address_hash, customer_id)"
                " SELECT * FROM unnest($3::text[], $4::text[], $5::text[]) AS a(channel, address_hash, owner)"
                " WHERE owner NOT IN (SELECT customer_id FROM forgotten) ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT customer_id FROM forgotten",
                ids, payloads, channels, hashes, owners, check_ids)
        return {row["customer_id"] for row in rows}

    async def contact_points(self, customer_id: str) -> ContactPoints:
        """The profile's contact points and settings, decrypted in memory (empty for an unknown customer)."""
        async with timed(self._metrics, StatementKind.PROFILE_READ):
            fields = await self._pool.fetchval("SELECT fields FROM eventflow.customers WHERE customer_id = $1",
                                               customer_id)
        return self.contact_points_of(customer_id, json.loads(fields) if isinstance(fields, str) else fields or {})

    def contact_points_of(self, customer_id: str, fields: Mapping[str, Mapping[str, Any]]) -> ContactPoints:
        values: dict[str, str | None] = {}
        for name in PROFILE_FIELDS:
            stored = fields.get(name)
            if stored is None:
                values[name] = None
            elif name in SECRET_FIELDS:
                values[name] = self._cipher.open(customer_id, name, stored)
            else:
                values[name] = str(stored.get("v")) if stored.get("v") is not None else None
        attributes: dict[str, JsonValue] = {name.removeprefix(_ATTRIBUTE): stored.get("v")
                                            for name, stored in fields.items() if name.startswith(_ATTRIBUTE)}
        return ContactPoints(attributes=attributes, **values)

    async def last_whatsapp_inbound(self, customer_id: str, address_hash: str) -> datetime | None:
        """When the customer last wrote on WhatsApp from ``address_hash`` (`activities.whatsapp.InboundWindows`)."""
        async with timed(self._metrics, StatementKind.WINDOW_READ):
            found = await self._pool.fetchval(
                "SELECT last_at FROM eventflow.whatsapp_inbound WHERE customer_id = $1 AND address_hash = $2",
                customer_id, address_hash)
        return found if isinstance(found, datetime) else None

    async def field_names(self, customer_id: str) -> list[str]:
        """Which profile fields hold a value (for reports: never the values)."""
        fields = await self._pool.fetchval("SELECT fields FROM eventflow.customers WHERE customer_id = $1",
                                           customer_id)
        return sorted(json.loads(fields) if isinstance(fields, str) else fields or {})

    async def forgotten(self, customer_ids: Iterable[str]) -> set[str]:
        """Which of these customers have a tombstone."""
        async with timed(self._metrics, StatementKind.TOMBSTONE_BATCH):
            rows = await self._pool.fetch("SELECT customer_id FROM eventflow.tombstones WHERE customer_id = ANY($1::text[])",
                                          list(set(customer_ids)))
        return {row["customer_id"] for row in rows}

    async def lift_tombstone(self, customer_id: str, occurred_at: str) -> bool:
        """Ends the customer's tombstone for an identify event that occurred after the forget.

        Returns False when a tombstone newer than the event remains: a replay of a record from
        before the forget must not bring the customer back.
        """
        async with timed(self._metrics, StatementKind.TOMBSTONE_LIFT):
            remaining = await self._pool.fetchval(
                "WITH lifted AS (DELETE FROM eventflow.tombstones WHERE customer_id = $1 AND forgotten_at < $2"
                " RETURNING 1) SELECT count(*) FROM eventflow.tombstones WHERE customer_id = $1"
                " AND NOT EXISTS (SELECT 1 FROM lifted)", customer_id,
                datetime.fromisoformat(_stamp_time(occurred_at)))
        return not remaining

    async def change_subscription(self, event: CustomerEvent) -> bool:
        """Applies a ``SubscriptionChanged`` event (per channel; older changes lose); True when it took effect."""
        channel = str(event.payload.get("channel", "")).lower()
        if not channel:
            return False
        topic = str(event.payload.get("topic") or "")
        changed_at = datetime.fromisoformat(_stamp_time(event.occurred_at))
        async with timed(self._metrics, StatementKind.CONSENT), self._pool.acquire() as conn, conn.transaction():
            applied = await set_consent(conn, event.customer.id, channel, subscribed=bool(event.payload.get("subscribed")),
                                        source=str(event.payload.get("source") or "event"), changed_at=changed_at,
                                        topic=topic)
            if applied and event.payload.get("subscribed") and not topic:
                # A later opt-in lifts the channel's suppressions of this customer's addresses.
                await conn.execute(
                    "DELETE FROM eventflow.suppressions s USING eventflow.address_index a"
                    " WHERE a.customer_id = $1 AND a.channel = $2 AND s.channel = a.channel"
                    " AND s.address_hash = a.address_hash AND s.created_at <= $3", event.customer.id, channel, changed_at)
        return applied


class Batcher(Generic[K, V]):
    """Collects the calls made while one batch is being sent and sends them together.

    The first call schedules a flush on the next turn of the event loop; calls made meanwhile join
    it. With ``max_flushes``, at most that many flushes run at once and calls made while they run
    wait for the next one, so a busy caller sends fewer, larger batches (each statement's fixed cost,
    planning above all, is paid per batch, not per call). ``flush`` answers the requests in order; each
    caller gets its own answer (or the batch's exception).
    """

    def __init__(self, flush: Callable[[list[K]], Awaitable[Sequence[V]]], *, max_flushes: int | None = None) -> None:
        if max_flushes is not None and max_flushes < 1:
            raise ValueError(f"max_flushes must be at least 1, not {max_flushes}")
        self._flush = flush
        self._max_flushes = max_flushes
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def __call__(self, request: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._schedule()
        return await future

    def _room(self) -> bool:
        return self._max_flushes is None or len(self._tasks) < self._max_flushes

    def _schedule(self) -> None:
        if self._pending and not self._scheduled and self._room():
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._pending or not self._room():
            return
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(pending))
        self._tasks.add(task)  # owned until done, so it is never garbage-collected mid-flight
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._schedule()  # the calls that waited for room

    async def _run(self, pending: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            answers = await self._flush([request for request, _ in pending])
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, who raises it
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(pending, answers, strict=True):
            if not future.done():
                future.set_result(answer)


class DeviceWriter(Protocol):
    """Where device registrations go (`store.devices.StoreDevices`, which needs this module's cipher)."""

    async def apply_changes(self, changes: Sequence[DeviceChange]) -> None: ...


class CustomerBatcher:
    """The consumer's view of the store: tombstone checks, profile and device writes, batched per moment."""

    def __init__(self, store: CustomerStore, devices: DeviceWriter | None = None) -> None:
        self._store = store
        self._devices = devices
        self._forgotten = Batcher[str, bool](self._check)
        self._instances = JourneyInstances(store.pool, store.metrics)
        self._entries = Batcher[JourneyEntry, bool](self._enter)
        self._writes = Batcher[ProfileWrite, bool](self._write)
        self._device_writes = Batcher[DeviceChange, None](self._write_devices)

    async def _check(self, ids: list[str]) -> list[bool]:
        found = await self._store.forgotten(ids)
        return [customer_id in found for customer_id in ids]

    async def _enter(self, entries: list[JourneyEntry]) -> list[bool]:
        forgotten = await self._instances.enter(entries)
        return [entry.customer_id not in forgotten for entry in entries]

    async def _write(self, writes: list[ProfileWrite]) -> list[bool]:
        forgotten = await self._store.apply_unless_forgotten(writes)
        return [write.customer_id not in forgotten for write in writes]

    async def _write_devices(self, changes: list[DeviceChange]) -> list[None]:
        if self._devices is None:
            raise DevicesNotStoredError()
        await self._devices.apply_changes(changes)
        return [None] * len(changes)

    #: Journeys are found through `store.journey_instances`, so they start without search attributes.
    indexes_journeys = True

    async def forgotten(self, customer_id: str) -> bool:
        return await self._forgotten(customer_id)

    async def enter_journey(self, entry: JourneyEntry) -> bool:
        """Records the instance about to start; False (nothing recorded) when the customer is forgotten."""
        return await self._entries(entry)

    async def lift(self, customer_id: str, occurred_at: str) -> bool:
        return await self._store.lift_tombstone(customer_id, occurred_at)

    async def write_profile(self, customer_id: str, update: ProfileUpdate | None) -> bool:
        """Writes the update unless the customer is forgotten (checked in the same statement); False then."""
        return await self._writes(ProfileWrite(customer_id, update))

    async def change_subscription(self, event: CustomerEvent) -> None:
        await self._store.change_subscription(event)

    async def change_device(self, change: DeviceChange) -> None:
        await self._device_writes(change)
