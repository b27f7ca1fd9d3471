"""Durations as journey authors write them: ``90s``, ``15m``, ``1h``, ``3d``, ``2w``, or combined ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """Parses ``text``; raises ValueError naming the text when it is not a duration."""
    compact = text.replace(" ", "")
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 3d, 1d12h)")
    return sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in parts), timedelta())
