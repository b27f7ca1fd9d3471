"""Calendar arithmetic in a customer's timezone: quiet-hour windows and local days.

Pure functions of their arguments, so workflows may call them deterministically; workflows import
this module passed through the sandbox, because the sandbox proxies ``zoneinfo`` objects and a
proxied ``tzinfo`` is rejected by ``datetime``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> tzinfo:
    """The IANA zone ``name``; UTC when unknown (a bad timezone must not block sending)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_window_end(now: datetime, timezone_name: str, quiet_hours: str) -> datetime | None:
    """The end (UTC) of the quiet window ``now`` falls in, or None when sending is allowed now.

    ``quiet_hours`` is ``"HH:MM-HH:MM"`` in local time; a window may wrap midnight (``21:00-08:00``).
    """
    if not quiet_hours:
        return None
    start_text, end_text = quiet_hours.split("-")
    start, end = _clock(start_text), _clock(end_text)
    if start == end:
        return None
    tz = zone(timezone_name)
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= clock < end, local.date()
    else:
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(UTC)


def local_day(now: datetime, timezone_name: str) -> str:
    """The customer's calendar day at ``now``, as ``YYYY-MM-DD``."""
    return now.astimezone(zone(timezone_name)).date().isoformat()


def next_local_midnight(now: datetime, timezone_name: str) -> datetime:
    """The start (UTC) of the customer's next calendar day."""
    tz = zone(timezone_name)
    tomorrow = now.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0, 0), tzinfo=tz).astimezone(UTC)


def start_of_local_day(day: date, timezone_name: str) -> datetime:
    """The start (UTC) of the customer's calendar day ``day``."""
    return datetime.combine(day, time(0, 0), tzinfo=zone(timezone_name)).astimezone(UTC)
