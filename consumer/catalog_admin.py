"""What ``eventflow journeys publish|pause|resume|archive|rollback|diff`` and ``eventflow segments
publish`` do, on a `CatalogWriter`.

A publish validates everything first, with the same checks as ``eventflow journeys validate``
(templates test-rendered), and writes nothing if any file has a problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus

from consumer.catalog_channels import unserved_channels
from consumer.catalog_topic import CatalogWriter
from core.errors import EventflowError
from core.settings import ChannelSettings
from journeys.catalog import Catalog, CatalogAction, CatalogEntry, CatalogError, SourceFile, next_entry
from journeys.loader import Problem, load_templates, validate_folder
from journeys.model import JourneyDefinition
from journeys.routing import instances_prefix
from journeys.segment_catalog import SegmentEntry, next_segment_entry
from journeys.segments import ATTRIBUTES_FILE, AUDIENCES, check_segments


class CatalogValidationError(EventflowError):
    """A publish was refused: the files have problems (each names its file and line); nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"nothing published: {len(problems)} problem(s):\n" + "\n".join(map(str, problems)))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Published:
    """What one journey's publish did: the new entry, or None when its content was unchanged."""

    journey_id: str
    entry: CatalogEntry | None
    current_version: int


def _root_and_files(path: Path) -> tuple[Path, Path | None]:
    """The journeys folder (with definitions/ and templates/) and the one file chosen, if any."""
    if path.is_dir():
        return (path.parent, None) if path.name == "definitions" else (path, None)
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    return (path.parent.parent if path.parent.name == "definitions" else path.parent), path


def _sources(root: Path, definition: JourneyDefinition) -> tuple[SourceFile, tuple[SourceFile, ...]]:
    def read(file: Path) -> SourceFile:
        return SourceFile(str(file.resolve().relative_to(root.resolve())) if file.resolve().is_relative_to(
            root.resolve()) else file.name, file.read_text(encoding="utf-8"))

    templates, _ = load_templates(root / "templates")
    used = tuple(read(Path(templates[t].file)) for t in sorted(definition.templates) if t in templates)
    return read(Path(definition.source_file)), used


def publish_path(writer: CatalogWriter, path: Path, *, author: str, summary: str | None = None,
                 channels: ChannelSettings | None = None) -> list[Published]:
    """Validates the definitions at ``path`` (a file, or a folder) and publishes each as a new version.

    Args:
        channels: the deployment's providers: outside development mode a journey sending on a
            channel no provider serves is a problem (`consumer.catalog_channels`); None skips the check.

    Raises:
        CatalogValidationError: any problem in the folder; nothing is published.
    """
    root, chosen = _root_and_files(path)
    if chosen is not None and chosen.parent.name == "definitions" and not (root / "templates").is_dir():
        raise CatalogError(f"{chosen}: no templates/ folder beside {chosen.parent}")
    report = validate_folder(root)
    if report.problems:
        raise CatalogValidationError(report.problems)
    definitions = [d for d in report.definitions
                   if chosen is None or Path(d.source_file).resolve() == chosen.resolve()]
    if not definitions:
        raise CatalogError(f"{path}: no journey definition found (a file must be in <folder>/definitions/, "
                           "beside <folder>/templates/)")
    if channels is not None:
        unserved = [Problem(d.source_file, 1, f"journey {d.id} sends on {', '.join(found)}, which no provider "
                                              f"serves here ({', '.join(_provider_variables(found))} unset or "
                                              "outbox): set the provider, or EVENTFLOW_DEV_MODE=true for "
                                              "development")
                    for d in definitions if (found := unserved_channels(d, channels))]
        if unserved:
            raise CatalogValidationError(unserved)
    writer.ensure_topic()
    results = []
    for definition in definitions:
        source, templates = _sources(root, definition)
        text = summary or f"publish {source.name}"
        entry = writer.write(partial(_publish_entry, definition=definition, source=source, templates=templates,
                                     author=author, summary=text))
        current = entry.version if entry is not None else _current_version(writer.read(), definition.id)
        results.append(Published(definition.id, entry, current))
    return results


def _provider_variables(channels: Sequence[str]) -> list[str]:
    return [ChannelSettings.variable(f"{channel}_provider") for channel in channels]


def _publish_entry(catalog: Catalog, *, definition: JourneyDefinition, source: SourceFile,
                   templates: tuple[SourceFile, ...], author: str, summary: str) -> CatalogEntry | None:
    return next_entry(catalog, journey_id=definition.id, action=CatalogAction.PUBLISH, author=author,
                      at=datetime.now(UTC), summary=summary, definition=definition, definition_source=source,
                      templates=templates)


def _current_version(catalog: Catalog, journey_id: str) -> int:
    latest = catalog.latest(journey_id)
    return latest.version if latest else 0


@dataclass(frozen=True)
class PublishedSegment:
    """What one segment's publish did: the new entry, or None when its content was unchanged."""

    segment_id: str
    entry: SegmentEntry | None
    current_version: int


def _segments_root(path: Path) -> tuple[Path, Path | None]:
    """The journeys folder (with audiences/) and the one segment file chosen, if any."""
    if path.is_dir():
        return (path.parent, None) if path.name == AUDIENCES else (path, None)
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    if path.parent.name != AUDIENCES or path.name == ATTRIBUTES_FILE:
        raise CatalogError(f"{path}: a segment file is in <journeys folder>/{AUDIENCES}/ (not {ATTRIBUTES_FILE})")
    return path.parent.parent, path


def publish_segments(writer: CatalogWriter, path: Path, *, author: str,
                     summary: str | None = None) -> list[PublishedSegment]:
    """Validates the segments at ``path`` (the journeys folder, its audiences/ or one segment file) and
    publishes each whose content changed as a new version, with the attribute declarations it was
    checked against.

    Raises:
        CatalogValidationError: any problem in the segments or the attributes; nothing is published.
        CatalogError: no segment at ``path``.
    """
    root, chosen = _segments_root(path)
    segments, problems = check_segments(root)
    if problems:
        raise CatalogValidationError(problems)
    if chosen is not None:
        segments = [s for s in segments if Path(s.file).resolve() == chosen.resolve()]
    if not segments:
        raise CatalogError(f"{path}: no segment found (segment files are in <journeys folder>/{AUDIENCES}/)")
    audiences = root / AUDIENCES
    declared = audiences / ATTRIBUTES_FILE
    attributes = SourceFile(f"{AUDIENCES}/{ATTRIBUTES_FILE}", declared.read_text(encoding="utf-8")) \
        if declared.exists() else None
    writer.ensure_topic()
    results = []
    for segment in segments:
        file = Path(segment.file)
        definition = SourceFile(f"{AUDIENCES}/{file.name}", file.read_text(encoding="utf-8"))
        entry = writer.write_segment(partial(next_segment_entry, segment=segment, definition=definition,
                                             attributes=attributes, author=author, at=datetime.now(UTC),
                                             summary=summary or f"publish {definition.name}"))
        latest = writer.read_segments().latest(segment.id) if entry is None else entry
        results.append(PublishedSegment(segment.id, entry, latest.version if latest else 0))
    return results


def change(writer: CatalogWriter, journey_id: str, action: CatalogAction, *, author: str,
           summary: str | None = None, rollback_to: int | None = None) -> CatalogEntry | None:
    """Pause, resume, archive or roll back ``journey_id``; None when it is already so."""
    text = summary or (f"rollback to v{rollback_to}" if action is CatalogAction.ROLLBACK else action.value)

    def make(catalog: Catalog) -> CatalogEntry | None:
        return next_entry(catalog, journey_id=journey_id, action=action, author=author, at=datetime.now(UTC),
                          summary=text, rollback_to=rollback_to)

    return writer.write(make)


def diff(catalog: Catalog, journey_id: str, old: int, new: int) -> str:
    """A unified diff of two versions' definition and template sources (empty when equal)."""
    entries = []
    for version in (old, new):
        entry = catalog.version(journey_id, version)
        if entry is None:
            latest = catalog.latest(journey_id)
            raise CatalogError(f"journey {journey_id} has no version {version}"
                               + (f" (versions 1 to {latest.version})" if latest else " (not in the catalog)"))
        entries.append(entry)
    lines: list[str] = []
    files = [{f.name: f.text for f in (e.definition, *e.templates)} for e in entries]
    for name in sorted(set(files[0]) | set(files[1])):
        lines += difflib.unified_diff(files[0].get(name, "").splitlines(keepends=True),
                                      files[1].get(name, "").splitlines(keepends=True),
                                      fromfile=f"v{old}/{name}", tofile=f"v{new}/{name}")
    return "".join(lines)


#: The ids a journey may have (journey.schema.json): none needs quoting in a visibility filter.
_JOURNEY_ID = re.compile(r"[a-z][a-z0-9_]*")


def instances_filter(journey_id: str) -> str | None:
    """The visibility filter of every instance of ``journey_id``, by workflow id: instances started with
    search attributes and without (`store.journey_instances`) alike. None for an id no journey can have."""
    if not _JOURNEY_ID.fullmatch(journey_id):
        return None
    return f"WorkflowId STARTS_WITH '{instances_prefix(journey_id)}'"


async def cancel_running(client: Client, journey_id: str) -> int:
    """Requests cancellation of every running instance of ``journey_id`` (``archive --exit-running``)."""
    found = instances_filter(journey_id)
    if found is None:
        return 0
    count = 0
    async for execution in client.list_workflows(f"{found} AND ExecutionStatus = 'Running'"):
        if execution.status is WorkflowExecutionStatus.RUNNING:
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).cancel()
            count += 1
    return count


__all__ = ["CatalogValidationError", "Published", "PublishedSegment", "cancel_running", "change", "diff",
           "instances_filter", "publish_path", "publish_segments"]
