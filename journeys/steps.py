"""The step tree of a journey: walking it, and the control flow the interpreter follows.

Steps nest: ``branch`` cases, ``wait_for`` outcomes and ``split`` variants each hold a list of
steps (an *arm*). When an arm ends, the journey continues with the step after the one that owns
the arm. There are no loops or gotos, so every step runs at most once per instance and its id
names its send (idempotency key) and its position (for continue-as-new and the status query).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STEP_KINDS = ("send", "delay", "branch", "wait_for", "split", "digest", "exit")

Step = Mapping[str, Any]
#: Mapping keys and list indexes from a definition's root to a value.
StepPath = tuple[str | int, ...]


def kind_of(step: Step) -> str:
    """The step's type: the one key of `STEP_KINDS` it carries."""
    for kind in STEP_KINDS:
        if kind in step:
            return kind
    raise ValueError(f"step {step.get('id')!r} has none of {', '.join(STEP_KINDS)}")


def arms(step: Step) -> list[tuple[str, Sequence[Step], StepPath]]:
    """The nested step lists of ``step``: (arm name, steps, path relative to the step)."""
    kind = kind_of(step)
    body = step.get(kind) or {}
    found: list[tuple[str, Sequence[Step], StepPath]] = []
    if kind == "branch":
        for index, case in enumerate(body.get("cases", ())):
            found.append((f"case {index + 1}", case.get("steps") or (), ("branch", "cases", index, "steps")))
        found.append(("else", body.get("else") or (), ("branch", "else")))
    elif kind == "wait_for":
        found.append(("received", body.get("received") or (), ("wait_for", "received")))
        found.append(("timed_out", body.get("timed_out") or (), ("wait_for", "timed_out")))
    elif kind == "split":
        for index, variant in enumerate(body.get("variants", ())):
            found.append((str(variant.get("name")), variant.get("steps") or (), ("split", "variants", index, "steps")))
    return found


def walk(steps: Sequence[Step], path: StepPath = ("steps",)) -> Iterator[tuple[Step, StepPath]]:
    """Every step of the tree, depth first in document order, with its path from the root."""
    for index, step in enumerate(steps):
        here = (*path, index)
        yield step, here
        if isinstance(step, Mapping) and any(kind in step for kind in STEP_KINDS):
            for _, nested, relative in arms(step):
                yield from walk(nested, (*here, *relative))


@dataclass(frozen=True)
class Flow:
    """The control flow of a step tree.

    Attributes:
        first: the id of the first step, or None for an empty journey.
        steps: every step by id.
        following: for each step id, the id of the step that runs after it (and after any arm it
            entered) finishes, or None when the journey ends there.
    """

    first: str | None
    steps: Mapping[str, Step]
    following: Mapping[str, str | None]

    def arm_start(self, step_id: str, arm: Sequence[Step]) -> str | None:
        """Where to go when ``step_id`` enters ``arm``: its first step, or on after an empty arm."""
        return str(arm[0]["id"]) if arm else self.following[step_id]


def flow(steps: Sequence[Step]) -> Flow:
    """Compiles the tree into a `Flow`; a pure function of the definition, so deterministic."""
    by_id: dict[str, Step] = {}
    following: dict[str, str | None] = {}

    def visit(items: Sequence[Step], after: str | None) -> None:
        for index, step in enumerate(items):
            step_id = str(step["id"])
            by_id[step_id] = step
            following[step_id] = str(items[index + 1]["id"]) if index + 1 < len(items) else after
            for _, nested, _ in arms(step):
                visit(nested, following[step_id])

    visit(steps, None)
    return Flow(first=str(steps[0]["id"]) if steps else None, steps=by_id, following=following)
