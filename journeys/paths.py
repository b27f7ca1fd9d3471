"""Dotted-path lookups (``payload.order_id``) into an event's context mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """Returns the value at ``path`` or None when any segment is missing."""
    value: Any = context
    for segment in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment, _MISSING)
        if value is _MISSING:
            return None
    return value
