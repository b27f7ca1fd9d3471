"""Time arithmetic for delays: local times of day in a customer's zone, event timestamps, offsets.

Pure functions of their arguments (no clock), so the interpreter can call them deterministically.
The workflow imports this module passed through the sandbox, which lets ``zoneinfo`` read its
time zone data here.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time, timedelta, tzinfo

from journeys.durations import parse_duration


def parse_timestamp(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string or epoch milliseconds; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def signed_duration(text: str) -> timedelta:
    """``-1d`` / ``+2h`` / ``30m`` as a timedelta; raises ValueError on anything else."""
    stripped = text.strip()
    if stripped.startswith("-"):
        return -parse_duration(stripped[1:])
    return parse_duration(stripped.lstrip("+"))


def _zone(name: str) -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def next_local_time(after: datetime, hhmm: str, zone_name: str) -> datetime:
    """The first moment strictly after ``after`` when the clock in ``zone_name`` shows ``hhmm`` (UTC).

    An unknown zone counts as UTC. On a day when ``hhmm`` does not exist (spring forward) the
    wall-clock time is resolved by ``zoneinfo`` (it lands an hour later).
    """
    zone = _zone(zone_name)
    hour, minute = (int(part) for part in hhmm.split(":"))
    local = after.astimezone(zone)
    for days in range(3):
        candidate = datetime.combine(local.date() + timedelta(days=days), time(hour, minute), tzinfo=zone)
        if candidate > local:
            return candidate.astimezone(UTC)
    return (local + timedelta(days=1)).astimezone(UTC)
