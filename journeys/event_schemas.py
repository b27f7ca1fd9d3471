"""The event types journeys can use and a sample of each: the built-in envelope's and the sources'.

``journeys/sources.yaml`` is checked here against ``journeys/sources.schema.json`` (problems name
``file:line``), and each source's ``schemas`` (event type -> Avro schema file of its body) become
sample events, so triggers, exits, waits and templates on source events are checked like the
built-in ones: a path the schema lacks, or a comparison its type cannot satisfy, is a problem.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from events.sources import SOURCES_FILE, SourceFileError, parse_sources
from journeys._yaml import DocPath, YamlSyntaxError
from journeys.schema_types import Field, SourceSample, schema_fields
from journeys.samples import sample_event_context, sample_from_schema, sample_source_context

SCHEMA_PATH = Path(__file__).resolve().parent / "sources.schema.json"


class EventCatalogue(Collection[str]):
    """Known event types, each with a sample event context (built-in types from ``avro/``)."""

    def __init__(self, builtin: Collection[str], sources: Mapping[str, Mapping[str, Any]] | None = None,
                 fields: Mapping[str, Mapping[tuple[str, ...], Field]] | None = None) -> None:
        self._builtin = frozenset(builtin)
        self._sources = dict(sources or {})
        self._fields = dict(fields or {})

    def __contains__(self, item: object) -> bool:
        return item in self._builtin or item in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builtin | set(self._sources)))

    def __len__(self) -> int:
        return len(self._builtin | set(self._sources))

    def sample(self, event_type: str) -> dict[str, Any]:
        """A sample context of ``event_type``; empty when unknown (nothing further can be checked)."""
        if event_type in self._builtin:
            return sample_event_context(event_type)
        source = self._sources.get(event_type)
        if source is None:
            return {}
        return SourceSample(json.loads(json.dumps(source)), self._fields.get(event_type, {}))


@cache
def sources_schema() -> dict[str, Any]:
    """The published JSON Schema of the source file."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def source_samples(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[tuple[str, ...], Field]],
                                        list[tuple[str, int, str]]]:
    """Sample contexts of the event types ``root/sources.yaml`` gives schemas for, and its problems.

    A problem is ``(file, line, message)``; the caller turns it into a `journeys.loader.Problem`.
    """
    from journeys.loader import _read  # the loader's reader: one YAML dialect with line numbers

    path = root / SOURCES_FILE
    if not path.exists():
        return {}, {}, []
    try:
        document = _read(path)
    except YamlSyntaxError as exc:
        return {}, {}, [(str(path), exc.line or 1, exc.problem)]
    validator = jsonschema.Draft202012Validator(sources_schema())
    problems: list[tuple[str, int, str]] = []
    for error in validator.iter_errors(document.data):
        where: DocPath = tuple(error.absolute_path)
        problems.append((str(path), document.line_of(where) or 1,
                         f"{'.'.join(map(str, where)) or 'top level'}: {error.message}"))
    if problems:
        return {}, {}, problems
    try:
        sources = parse_sources(document.data, root, str(path))
    except SourceFileError as exc:
        return {}, {}, [(str(path), 1, str(exc))]
    samples: dict[str, dict[str, Any]] = {}
    fields: dict[str, dict[tuple[str, ...], Field]] = {}
    for index, source in enumerate(sources):
        for event_type, schema_path in source.schemas.items():
            where = ("sources", index, "schemas", event_type)
            try:
                schema = json.loads(schema_path.read_text())
                payload = sample_from_schema(schema)
                fields[event_type] = schema_fields(schema)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                problems.append((str(path), document.line_of(where) or 1, f"schema of {event_type} ({schema_path}) is not a readable "
                                                   f"Avro record schema: {exc}"))
                continue
            samples[event_type] = sample_source_context(event_type, payload)
    return samples, fields, problems


def catalogue(builtin: Collection[str], root: Path) -> tuple[EventCatalogue, list[tuple[str, int, str]]]:
    """The event types of the built-in envelope and of ``root``'s source file."""
    samples, fields, problems = source_samples(root)
    return EventCatalogue(builtin, samples, fields), problems


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    """``payload.a.b`` / ``payload["a"]`` as its parts, None for anything but a chain from a name."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def template_path_problems(text: str, context: Mapping[str, Any], roots: Collection[str] = ("payload", "customer")
                           ) -> list[str]:
    """Paths into the event a template reads that the sample event lacks (``payload.nope``).

    Only chains from ``roots`` are checked (a loop variable or a filter's result is not the event);
    a chain that reaches a list stops being checked, as the expressions' paths do.
    """
    parsed = _jinja_env().parse(text)
    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for node in parsed.find_all((nodes.Getattr, nodes.Getitem)):
        parts = _chain(node)
        if parts is None or parts[0] not in roots or parts[0] not in context or parts in seen:
            continue
        seen.add(parts)
        value: Any = context
        for index, part in enumerate(parts):
            if isinstance(value, list):
                break
            if not isinstance(value, Mapping):
                problems.append(f"{'.'.join(parts[:index])} has no fields, so {'.'.join(parts)} is always empty")
                break
            if part not in value:
                problems.append(f"{'.'.join(parts[:index])} has no field {part!r}")
                break
            value = value[part]
    # Only the longest chain of each expression is reported (payload.a.b also visits payload.a).
    return sorted(set(problems))


@cache
def _jinja_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=False)
