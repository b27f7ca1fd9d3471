"""Provider and event times as the store keeps them: timezone-aware, UTC when the text names no zone."""

from __future__ import annotations

from datetime import UTC, datetime


def instant(text: str) -> datetime:
    """``text`` (ISO 8601) as an aware datetime; now when it cannot be read (a provider's malformed time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
