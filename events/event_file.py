"""Events in a JSON Lines file, one JSON object a line: what ``eventflow produce --file`` publishes
and ``eventflow journeys simulate --events`` delivers.

Every problem names ``file:line``. A line without ``event_id`` gets one derived from its content
(`derived_event_id`), so publishing the same file again yields the same ids and the consumer
treats the events as the ones it has seen rather than as new ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import EventflowError

#: The uuid5 namespace of derived event ids (fixed: ids must not change between releases).
_EVENT_ID_NAMESPACE = uuid.UUID("5b0c1f4e-3d0a-4f7e-9a51-2c6f0e8d7b13")


class EventFileError(EventflowError):
    """The file cannot be read, or some of its lines are not JSON objects.

    Attributes:
        path: the file.
        problems: one ``file:line: reason`` line each (or one ``file: reason`` for the whole file).
        whole_file: the file itself could not be read.
    """

    def __init__(self, path: Path, problems: Sequence[str], *, whole_file: bool = False) -> None:
        super().__init__("\n".join(problems))
        self.path = path
        self.problems = tuple(problems)
        self.whole_file = whole_file


@dataclass(frozen=True)
class FileEvent:
    """One line's event (JSON form) and where it came from.

    Attributes:
        event: the event, with its ``event_id`` (derived when the line had none).
        line: the 1-based line number.
    """

    path: Path
    line: int
    event: Mapping[str, Any]

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.path}:{self.line}"

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id", ""))


def derived_event_id(event: Mapping[str, Any]) -> str:
    """A UUID from the event's content (without ``event_id``): the same event always gets the same id."""
    content = json.dumps({k: v for k, v in event.items() if k != "event_id"}, sort_keys=True, separators=(",", ":"))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, content))


def read_event_file(path: Path, *, derive_ids: bool = True) -> list[FileEvent]:
    """The file's events in order (blank lines skipped); ``derive_ids``: give a line without
    ``event_id`` one (`derived_event_id`).

    Raises:
        EventFileError: the file cannot be read, or lines are not JSON objects (every such line named).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise EventFileError(path, [f"{path}: cannot read: {exc.strerror or exc}"], whole_file=True) from exc
    events: list[FileEvent] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            # The decoder counts lines within the one line it was given: report the file's line.
            problems.append(f"{path}:{number}: not JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(event, dict):
            problems.append(f"{path}:{number}: not a JSON object (an event is one object a line)")
            continue
        if derive_ids and not event.get("event_id"):
            event = {"event_id": derived_event_id(event), **event}
        events.append(FileEvent(path, number, event))
    if problems:
        raise EventFileError(path, problems)
    return events
