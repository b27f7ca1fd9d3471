"""What validation reports: a `Problem` at ``file:line``, the `Report` that collects them, and the error.

The lowest module of the validator, so the source-file checks (`journeys.event_schemas`) and the
definition checks report the same type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import EventflowError
from journeys._yaml import DocPath, LocatedDocument


class JourneyDefinitionError(EventflowError):
    """A journey file is invalid; names the file and, where known, the line."""

    def __init__(self, file: str, problem: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a journey or template file, at a 1-based line (1 when nothing narrower is known)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def error(self) -> JourneyDefinitionError:
        return JourneyDefinitionError(self.file, self.message, self.line)


@dataclass
class Report:
    """The problems of one file; a typed node's document path (`journeys.steps.walk`) finds its line."""

    file: str
    document: LocatedDocument
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: DocPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.document.line_of(path) or 1, message))
