"""The checks a journey definition and its goal share: expressions, keys and paths against an event's sample.

`journeys._definition_checks` and `journeys._goal_checks` both build on these, so they live below both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from journeys import expressions
from journeys._yaml import DocPath
from journeys.event_schemas import EventCatalogue
from journeys.paths import lookup
from journeys.problems import Report
from journeys.samples import sample_event_context
from journeys.schema_types import SourceSample, literal_problems, moved_hint

#: The names an expression or key may start with.
CONTEXT_ROOTS = frozenset({"event_id", "event_type", "occurred_at", "customer", "payload", "journey", "webhooks"})


def path_problem(sample: Mapping[str, Any], parts: Sequence[str], roots: Collection[str]) -> str | None:
    """Why ``parts`` does not exist in ``sample`` (None when it does, or cannot be checked further)."""
    if not parts or parts[0] not in roots:
        return f"unknown name {parts[0] if parts else ''!r}; paths start with one of {', '.join(sorted(roots))}"
    if parts[0] == "webhooks":
        return None  # webhook responses have no schema to check against
    if parts[0] == "journey":
        if len(parts) >= 2 and parts[1] not in ("id", "version", "content_hash", "variants"):
            return f"journey has no field {parts[1]!r} (id, version, content_hash, variants)"
        return None
    value: Any = sample
    for index, part in enumerate(parts):
        if isinstance(value, list):
            return None
        if not isinstance(value, Mapping):
            return f"{'.'.join(parts[:index])} has no fields, so {'.'.join(parts)} is always null"
        if part not in value:
            return f"{'.'.join(parts[:index]) or 'the event'} has no field {part!r}"
        value = value[part]
    return None


def check_expression(report: Report, where: DocPath, source: str, sample: Mapping[str, Any],
                      roots: Collection[str]) -> None:
    try:
        node = expressions.parse(source)
    except expressions.ExpressionError as exc:
        report.add(where, str(exc))
        return
    broken = False
    for parts in expressions.paths(node):
        problem = path_problem(sample, parts, roots)
        if problem:
            broken = True
            report.add(where, f"expression {source!r}: {problem}{moved_hint(sample, parts)}")
    if broken:
        return

    def kind_of(parts: tuple[str, ...]) -> expressions.ValueKind | None:
        if parts[0] == "journey" or parts[0] not in sample:
            return None
        return expressions.kind_of_value(lookup(sample, ".".join(parts)))

    for problem in [*expressions.type_problems(node, kind_of), *literal_problems(node, sample)]:
        report.add(where, f"expression {source!r}: {problem}")


#: Contact points: a key on one would put an address into workflow ids, visibility, logs and traces.
CONTACT_POINTS = ("email", "phone", "whatsapp")
CONTACT_POINT_KEYS = frozenset(f"customer.{name}" for name in CONTACT_POINTS)


def check_key(report: Report, where: DocPath, key: str, sample: Mapping[str, Any], event_type: str) -> None:
    """A key (entry, listener or goal) must name a field of ``event_type`` and never a contact point.

    The contact check needs no sample: it also holds for event types the validator cannot see.
    """
    moved = sample.moved.get(key) if isinstance(sample, SourceSample) else None
    if key in CONTACT_POINT_KEYS or (moved is not None and moved in CONTACT_POINT_KEYS):
        via = f" (the source maps it to {moved})" if moved is not None else ""
        report.add(where, f"key {key!r} is a contact point{via}: it would put an address into workflow ids, "
                          "logs and traces; key on an id (e.g. payload.order_id)")
        return
    if not sample:
        return
    problem = path_problem(sample, key.split("."), CONTEXT_ROOTS - {"journey"})
    if problem:
        report.add(where, f"key {key!r} in {event_type}: {problem}")


def listener_key(explicit: str | None, entry_key: str | None, sample: Mapping[str, Any]) -> str | None:
    if explicit:
        return explicit
    if entry_key and path_problem(sample, entry_key.split("."), CONTEXT_ROOTS) is None:
        return entry_key
    return None


def sample_for(event_type: str, known: Collection[str]) -> dict[str, Any]:
    if isinstance(known, EventCatalogue):
        return known.sample(event_type)
    return sample_event_context(event_type) if event_type in known else {}
