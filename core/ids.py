"""Workflow ids built from parts, so that distinct parts always give distinct ids.

Ids join their parts with ``:``. A part that holds ``:`` (or ``%``, the escape character) is
percent-escaped (``%3A``, ``%25``), so no part can reach into the next one: customer ``acme:42``
with key ``cart-9`` and customer ``acme`` with key ``42:cart-9`` no longer meet in one id. A part
without either character is kept as it is, so every id made before escaping existed (every
running journey, profile and tombstone of an ordinary customer) keeps its exact form. See
docs/architecture.md, "Identifiers".
"""

from __future__ import annotations

import re

SEPARATOR = ":"
_ESCAPES = (("%", "%25"), (":", "%3A"))
_UNESCAPES = {escaped: raw for raw, escaped in _ESCAPES}
_ESCAPED = re.compile("|".join(re.escape(escaped) for _, escaped in _ESCAPES))


def escape_part(part: str) -> str:
    """``part`` with ``%`` and ``:`` percent-escaped; unchanged when it holds neither."""
    if "%" not in part and SEPARATOR not in part:
        return part
    for raw, escaped in _ESCAPES:  # "%" first, so the "%" of "%3A" is not escaped again
        part = part.replace(raw, escaped)
    return part


def unescape_part(part: str) -> str:
    """The inverse of `escape_part`."""
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group(0)], part)


def join_id(*parts: str) -> str:
    """One id from ``parts``: each escaped, joined with ``:``; injective over part tuples."""
    return SEPARATOR.join(escape_part(part) for part in parts)


def split_id(workflow_id: str) -> list[str]:
    """The parts of an id made by `join_id`."""
    return [unescape_part(part) for part in workflow_id.split(SEPARATOR)]
