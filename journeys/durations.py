"""Durations as journey authors write them: ``90s``, ``15m``, ``1h``, ``3d``, ``2w``, or combined ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The longest wait the validator accepts (about ten years): anything longer is a typo, and far
#: longer overflows Python's dates when added to now.
MAX_DURATION = timedelta(days=3653)


def _seconds(text: str) -> int:
    compact = text.replace(" ", "")
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 3d, 1d12h)")
    # Summed in integer seconds: timedelta(weeks=99999999999) itself raises OverflowError. More than
    # 20 digits is too long for any bound, and capping keeps int() clear of its own size limit.
    return sum(int(n if len(n) <= 20 else "9" * 20) * _SECONDS[unit] for n, unit in parts)


def parse_duration(text: str) -> timedelta:
    """Parses ``text``; raises ValueError naming the text when it is not a duration or cannot be one.

    No upper bound beyond what `timedelta` holds, so snapshots of running journeys keep the
    meaning they were started with; `check_duration` is the validator's stricter form.
    """
    seconds = _seconds(text)
    if seconds > timedelta.max.total_seconds():
        raise ValueError(f"duration {text.strip()!r} is too long to represent")
    return timedelta(seconds=seconds)


def check_duration(text: str) -> timedelta:
    """Parses a duration or a signed offset (``-1d``) as the validator accepts it: at most `MAX_DURATION`."""
    seconds = _seconds(text.strip().lstrip("+-"))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text.strip().lstrip('+-')!r} is longer than the maximum of {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)
