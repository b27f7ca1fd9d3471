"""The channel interface every provider implements, and the rendered message it delivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from activities.notifications import SendResult


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider."""

    idempotency_key: str
    channel: str
    to: str
    body: str
    subject: str | None = None
    template_id: str = ""
    locale: str = ""
    workflow_id: str = ""


class Channel(Protocol):
    """Delivers one message; raises retryable or permanent errors (see activities.errors)."""

    name: str

    async def deliver(self, message: OutgoingMessage) -> SendResult: ...
