"""The event types journeys can use and a sample of each: the built-in envelope's and the sources'.

``journeys/sources.yaml`` is checked here against ``journeys/sources.schema.json`` (problems name
``file:line``), and each source's ``schemas`` (event type -> Avro schema file of its body) become
sample events, so triggers, exits, waits and templates on source events are checked like the
built-in ones: a path the schema lacks, or a comparison its type cannot satisfy, is a problem.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from core.errors import EventflowError
from events.errors import RegistryUnavailableError
from events.sources import SOURCES_FILE, SchemaRef, SourceFileError, parse_sources, without
from journeys._yaml import DocPath, YamlSyntaxError, read_document
from journeys.problems import Problem
from journeys.samples import sample_event_context, sample_from_schema, sample_source_context
from journeys.schema_types import Field, SourceSample, schema_fields
from journeys.segment_events import segment_event_samples

SCHEMA_PATH = Path(__file__).resolve().parent / "sources.schema.json"


class EventCatalogue(Collection[str]):
    """Known event types, each with a sample event context (built-in types from ``avro/``)."""

    def __init__(self, builtin: Collection[str], sources: Mapping[str, Mapping[str, Any]] | None = None,
                 fields: Mapping[str, Mapping[tuple[str, ...], Field]] | None = None,
                 moved: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._builtin = frozenset(builtin)
        self._sources = dict(sources or {})
        self._fields = dict(fields or {})
        self._moved = dict(moved or {})

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
        return SourceSample(json.loads(json.dumps(source)), self._fields.get(event_type, {}),
                            self._moved.get(event_type, {}))


@cache
def sources_schema() -> dict[str, Any]:
    """The published JSON Schema of the source file."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


@dataclass
class SourceSchemas:
    """Per source event type: a sample context, its schema's leaf fields, and the payload paths moved to the customer."""

    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    fields: dict[str, dict[tuple[str, ...], Field]] = field(default_factory=dict)
    moved: dict[str, dict[str, str]] = field(default_factory=dict)


def source_samples(root: Path) -> tuple[SourceSchemas, list[Problem]]:
    """Sample contexts of the event types ``root/sources.yaml`` gives schemas for, and its problems.

    The source file is checked against its schema and read into typed sources (`events.sources.parse_sources`)
    first; the samples are built from those.
    """
    path = root / SOURCES_FILE
    if not path.exists():
        return SourceSchemas(), []
    try:
        document = read_document(path)
    except YamlSyntaxError as exc:
        return SourceSchemas(), [Problem(str(path), exc.line or 1, exc.problem)]
    validator = jsonschema.Draft202012Validator(sources_schema())
    problems: list[Problem] = []
    for error in validator.iter_errors(document.data):
        where: DocPath = tuple(error.absolute_path)
        problems.append(Problem(str(path), document.line_of(where) or 1,
                                f"{'.'.join(map(str, where)) or 'top level'}: {error.message}"))
    if problems:
        return SourceSchemas(), problems
    try:
        sources = parse_sources(document.data, root, str(path))
    except SourceFileError as exc:
        return SourceSchemas(), [Problem(str(path), 1, str(exc))]
    found = SourceSchemas()
    for index, source in enumerate(sources):
        for event_type, schema_path in source.schemas.items():
            where = ("sources", index, "schemas", event_type)
            try:
                schema = _schema_text(schema_path)
                payload = without(sample_from_schema(schema), source.contact.values())
                found.fields[event_type] = schema_fields(schema)
                found.moved[event_type] = {f"payload.{path}": f"customer.{name}" for name, path in source.contact.items()}
            except SchemaUnavailableError as exc:
                problems.append(Problem(str(path), document.line_of(where) or 1, f"schema of {event_type}: {exc}"))
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                problems.append(Problem(str(path), document.line_of(where) or 1,
                                        f"schema of {event_type} ({schema_path}) is not a readable Avro record "
                                        f"schema: {exc}"))
                continue
            found.samples[event_type] = sample_source_context(event_type, payload)
    return found, problems


class SchemaUnavailableError(EventflowError):
    """A registry subject's schema could not be had."""


def _schema_text(ref: SchemaRef) -> dict[str, Any]:
    if ref.path is not None:
        loaded: dict[str, Any] = json.loads(ref.path.read_text())
        return loaded
    from confluent_kafka.schema_registry import SchemaRegistryError

    from events.registry import call_registry, connect, registry_settings

    settings = registry_settings()
    if settings is None:
        raise SchemaUnavailableError(f"registry subject {ref.subject} needs EVENTFLOW_SCHEMA_REGISTRY_URL")
    subject = str(ref.subject)
    try:
        latest = call_registry(f"get the latest version of {subject}",
                               lambda: connect(settings).get_latest_version(subject))
    except SchemaRegistryError as exc:
        raise SchemaUnavailableError(f"registry subject {subject} is unknown ({exc.error_message})") from exc
    except RegistryUnavailableError as exc:
        raise SchemaUnavailableError(str(exc)) from exc
    text: dict[str, Any] = json.loads(latest.schema.schema_str or "")
    return text


def catalogue(builtin: Collection[str], root: Path) -> tuple[EventCatalogue, list[Problem]]:
    """The event types of the built-in envelope, of ``root``'s source file, and the segment events."""
    found, problems = source_samples(root)
    return EventCatalogue(builtin, {**found.samples, **segment_event_samples()}, found.fields, found.moved), problems

