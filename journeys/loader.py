"""Loads journey definitions and their templates from a folder of YAML files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from eventflow.errors import EventflowError
from journeys.model import EntryRule, JourneyDefinition, Listener, Template

JOURNEYS_DIR_ENV = "EVENTFLOW_JOURNEYS_DIR"


class JourneyDefinitionError(EventflowError):
    """A journey file is invalid; names the file and, where known, the line."""

    def __init__(self, file: str, problem: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.line = line
        self.problem = problem


def default_journeys_dir() -> Path:
    """``$EVENTFLOW_JOURNEYS_DIR`` or the ``journeys/`` folder beside the packages."""
    explicit = os.environ.get(JOURNEYS_DIR_ENV)
    return Path(explicit) if explicit else Path(__file__).resolve().parent


def _load_templates(folder: Path) -> dict[str, Template]:
    templates: dict[str, Template] = {}
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        template_id = raw.get("id", path.stem)
        templates[template_id] = Template(
            id=template_id,
            default_locale=raw.get("default_locale", "en"),
            variants=raw.get("channels", {}),
        )
    return templates


def _listeners(raw: list[Mapping[str, Any]] | None, default_key: str | None) -> tuple[Listener, ...]:
    return tuple(Listener(item["event"], item.get("key", default_key)) for item in raw or ())


def _template_ids(steps: list[Mapping[str, Any]]) -> set[str]:
    found: set[str] = set()
    for step in steps:
        if "send" in step:
            found.add(step["send"]["template"])
    return found


def load_definition(path: Path, templates: Mapping[str, Template]) -> JourneyDefinition:
    """Parses and checks one journey file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = exc.problem_mark.line + 1 if getattr(exc, "problem_mark", None) else None
        raise JourneyDefinitionError(str(path), f"not valid YAML: {exc}", line) from exc
    if not isinstance(raw, Mapping):
        raise JourneyDefinitionError(str(path), "top level must be a mapping")
    try:
        entry = raw.get("entry", {})
        rule = EntryRule(entry.get("rule", EntryRule.ONCE_PER_KEY.value))
        key_path = entry.get("key")
        steps = list(raw["steps"])
        missing = _template_ids(steps) - templates.keys()
        if missing:
            raise JourneyDefinitionError(str(path), f"unknown templates: {sorted(missing)}")
        return JourneyDefinition(
            id=str(raw["id"]),
            version=int(raw["version"]),
            trigger_event=str(raw["trigger"]["event"]),
            trigger_filter=raw["trigger"].get("filter"),
            entry_rule=rule,
            key_path=key_path,
            exit_events=_listeners(raw.get("exit"), key_path),
            steps=tuple(steps),
            templates={t: templates[t] for t in _template_ids(steps)},
            source_file=str(path),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise JourneyDefinitionError(str(path), f"invalid definition: {exc!r}") from exc


def load_all(folder: Path | None = None) -> tuple[JourneyDefinition, ...]:
    """Loads every ``definitions/*.yaml`` under ``folder``, with templates from ``templates/``."""
    root = folder or default_journeys_dir()
    templates = _load_templates(root / "templates")
    return tuple(load_definition(p, templates) for p in sorted((root / "definitions").glob("*.yaml")))
