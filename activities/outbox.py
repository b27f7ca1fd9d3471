"""The development channel: appends each message to a JSON Lines file instead of calling a provider.

It honours idempotency keys like a real provider would: a key it has written before is reported
as a duplicate and not written again. A push send shares one key across the customer's devices,
so there the key is the send's key and the device's id together (one line per device). Outside development mode a channel without a provider is
`UnavailableChannel` instead: its sends fail (``failed:ChannelUnavailable``) and nothing is written,
so a journey published live on such a channel cannot leave messages in clear on a pod's disk.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

from activities.channels import OutgoingMessage
from activities.errors import ChannelUnavailableError
from activities.notifications import SendResult
from activities.outcomes import SendStatus


class OutboxChannel:
    """Writes messages to ``path``; one instance serves every channel name it is registered for."""

    name = "outbox"
    reconciles = True
    call_timeout_seconds = 1.0

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._written: set[str] | None = None

    def _load_keys(self) -> set[str]:
        keys: set[str] = set()
        if self._path.exists():
            for line in self._path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    keys.add(_written_key(str(record["idempotency_key"]), str(record.get("device_id") or "")))
                except (ValueError, KeyError, TypeError):
                    continue
        return keys

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        async with self._lock:
            if self._written is None:
                self._written = self._load_keys()
            key = _written_key(message.idempotency_key, message.device_id)
            if key in self._written:
                return SendResult(status=SendStatus.DUPLICATE, provider=self.name, provider_message_id=message.idempotency_key)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            record = {**asdict(message), "sent_at": time.time()}
            with self._path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            self._written.add(key)
        return SendResult(status=SendStatus.SENT, provider=self.name, provider_message_id=message.idempotency_key)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        async with self._lock:
            if self._written is None:
                self._written = self._load_keys()
            if _written_key(message.idempotency_key, message.device_id) in self._written:
                return SendResult(status=SendStatus.DUPLICATE, provider=self.name,
                                  provider_message_id=message.idempotency_key)
        return None


def _written_key(idempotency_key: str, device_id: str) -> str:
    """What the outbox dedupes on: the send's key, and for a push send the device it went to."""
    return f"{idempotency_key}\x00{device_id}" if device_id else idempotency_key


class UnavailableChannel:
    """A channel no provider serves, outside development mode: every send fails permanently."""

    name = "unavailable"
    reconciles = False
    call_timeout_seconds = 1.0

    def __init__(self, channel: str, variable: str) -> None:
        self._channel = channel
        self._variable = variable

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        raise ChannelUnavailableError(f"no provider serves {self._channel} ({self._variable} is unset or outbox, and "
                                      "development mode is off): the message was not sent", provider=self.name)

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        return None


def read_outbox(path: Path) -> list[dict[str, object]]:
    """Every message in an outbox file, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
