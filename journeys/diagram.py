"""A journey's step graph as data: one model that the text, Mermaid and SVG renderers draw.

The graph is built from the typed steps (`journeys.steps`) and their control flow (`flow`): a
trigger node, one node per step, and an end node; an edge for every way control can go, labelled
where a step chooses (branch conditions, wait outcomes, split shares). There are no loops, so the
graph is a DAG, which is what the SVG's layered layout relies on.

A *path* (the step ids a run visited, in order, as `journeys simulate` reports them) marks the
nodes and edges the run took; the renderers highlight them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import assert_never
from urllib.parse import urlsplit

from journeys.model import JourneyDefinition
from journeys.steps import (
    BranchStep,
    DelayStep,
    DigestStep,
    ExitStep,
    Flow,
    OnWebhookFailure,
    SendOptions,
    SendStep,
    SplitStep,
    Step,
    WaitForStep,
    WebhookStep,
    arms,
    flow,
)

#: Node ids of the two nodes that are not steps; step ids match ``^[a-z]``, so these never collide.
TRIGGER = "@trigger"
END = "@end"
#: The line added to a step that no path from the trigger reaches.
UNREACHABLE = "unreachable: every way here exits first"


class Shape(enum.StrEnum):
    """How a node is drawn: what kind of thing happens there."""

    START = "start"  # the trigger
    ACTION = "action"  # a send
    WAIT = "wait"  # a delay or wait_for
    CHOICE = "choice"  # a branch or split
    COLLECT = "collect"  # a digest
    CALL = "call"  # a webhook
    STOP = "stop"  # an exit step or the end


@dataclass(frozen=True)
class Node:
    """One box: its id (a step id, `TRIGGER` or `END`), lines of text, shape, nesting depth."""

    id: str
    kind: str
    lines: tuple[str, ...]
    shape: Shape
    depth: int = 0
    taken: bool = False


@dataclass(frozen=True)
class Edge:
    """Control going from ``source`` to ``target``; ``label`` says when (empty when always)."""

    source: str
    target: str
    label: str = ""
    taken: bool = False


@dataclass(frozen=True)
class Diagram:
    """A journey's graph: nodes in document order (trigger first, end last) and edges."""

    journey_id: str
    version: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes if n.id not in (TRIGGER, END))

    def outgoing(self, node_id: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.source == node_id)

    def with_path(self, path: Sequence[str], *, finished: bool = False) -> Diagram:
        """This diagram with the nodes and edges of a run marked taken.

        Args:
            path: the step ids the run visited, in order.
            finished: the run reached the end of its steps (rather than an exit step or exit event).
        """
        visited = [TRIGGER, *path] + ([END] if finished else [])
        pairs = set(zip(visited, visited[1:], strict=False))
        seen = set(visited)
        return replace(self, nodes=tuple(replace(n, taken=n.id in seen) for n in self.nodes),
                       edges=tuple(replace(e, taken=(e.source, e.target) in pairs) for e in self.edges))


def _send_text(options: SendOptions) -> str:
    text = f"send {options.channel} · template {options.template}"
    return text + (f" · fallback {options.fallback}" if options.fallback else "")


def _delay_text(step: DelayStep) -> str:
    if step.duration is not None:
        return f"delay {step.duration}"
    if step.until_local_time is not None:
        return f"delay until {step.until_local_time} local" + (f" (after {step.after})" if step.after else "")
    return f"delay until {step.until}" + (f" {step.offset}" if step.offset else "")


def _webhook_lines(step: WebhookStep) -> tuple[str, ...]:
    parts = urlsplit(step.url)
    where = f"{parts.netloc}{parts.path}" if parts.netloc else step.url
    lines = [f"webhook {step.method.value} {where}"]
    if step.save_as:
        lines.append(f"save as webhooks.{step.save_as}")
    if step.on_failure is OnWebhookFailure.EXIT:
        lines.append("on failure: exit")
    return tuple(lines)


def describe(step: Step) -> tuple[tuple[str, ...], Shape]:
    """The text lines (after the id) and shape of one step's node."""
    match step:
        case SendStep(send=options):
            return (_send_text(options),), Shape.ACTION
        case DelayStep():
            return (_delay_text(step),), Shape.WAIT
        case BranchStep():
            return ("branch",), Shape.CHOICE
        case WaitForStep(send=str() as target, outcome=outcome) if outcome is not None:
            return (f"wait for {outcome.value} of {target} up to {step.timeout}",), Shape.WAIT
        case WaitForStep():
            lines = [f"wait for {step.event} up to {step.timeout}"]
            return (*lines, *((f"when {step.when}",) if step.when else ())), Shape.WAIT
        case SplitStep():
            return ("split",), Shape.CHOICE
        case DigestStep():
            return (f"digest {step.event} over {step.window}", _send_text(step.send)), Shape.COLLECT
        case ExitStep(reason=reason):
            return (f"exit: {reason}" if reason else "exit",), Shape.STOP
        case WebhookStep():
            return _webhook_lines(step), Shape.CALL
        case _:
            assert_never(step)  # a new step type must be drawn (mypy checks it)


def _choices(step: Step, steps: Flow) -> list[tuple[str | None, str]]:
    """Where control goes from ``step``: (target step id or None for the end, label)."""
    following = steps.following[step.id]
    match step:
        case BranchStep(cases=cases, otherwise=otherwise):
            return [*((steps.arm_start(step.id, c.steps), f"when {c.when}") for c in cases),
                    (steps.arm_start(step.id, otherwise), "else")]
        case WaitForStep(outcome=outcome) if outcome is not None:
            return [(steps.arm_start(step.id, step.received), outcome.value),
                    (steps.arm_start(step.id, step.timed_out), f"not {outcome.value} after {step.timeout}")]
        case WaitForStep():
            return [(steps.arm_start(step.id, step.received), "received"),
                    (steps.arm_start(step.id, step.timed_out), f"timed out after {step.timeout}")]
        case SplitStep(variants=variants):
            return [(steps.arm_start(step.id, v.steps), f"{v.name} {v.percent}%") for v in variants]
        case ExitStep():
            return []
        case WebhookStep(on_failure=OnWebhookFailure.EXIT):
            return [(following, "ok")]
        case _:
            return [(following, "")]


def _depths(steps: Sequence[Step], depth: int, found: dict[str, int]) -> None:
    for step in steps:
        found[step.id] = depth
        for _, nested, _ in arms(step):
            _depths(nested, depth + 1, found)


def build(definition: JourneyDefinition) -> Diagram:
    """The diagram of ``definition``: a pure function of its steps, trigger and exit events."""
    steps = flow(definition.steps)
    depths: dict[str, int] = {}
    _depths(definition.steps, 0, depths)
    trigger = [f"trigger {definition.trigger_event}"]
    if definition.trigger_filter:
        trigger.append(f"filter {definition.trigger_filter}")
    for listener in definition.exit_events:
        trigger.append(f"exits on {listener.event_type}" + (f" when {listener.when}" if listener.when else ""))
    if definition.goal is not None:
        goal = definition.goal
        trigger.append(f"goal {goal.event_type} within {goal.within}" + (f" after {goal.after}" if goal.after else "")
                       + (f" when {goal.when}" if goal.when else ""))
    if definition.holdout_percent:
        trigger.append(f"holdout {definition.holdout_percent}%")
    nodes = [Node(TRIGGER, "trigger", tuple(trigger), Shape.START)]
    edges = [Edge(TRIGGER, steps.first or END)]
    for step_id, step in steps.steps.items():
        lines, shape = describe(step)
        nodes.append(Node(step_id, step.KIND.value, (step_id, *lines), shape, depths[step_id]))
        edges.extend(Edge(step_id, target or END, label) for target, label in _choices(step, steps))
    nodes.append(Node(END, "end", ("end",), Shape.STOP))
    reached = _reachable(edges)
    # A step after an exit (or after a choice whose every arm exits) never runs: say so, do not hide it.
    nodes = [n if n.id in reached else replace(n, lines=(*n.lines, UNREACHABLE)) for n in nodes]
    # `flow` lists the steps depth first in document order, so the nodes are in reading order.
    return Diagram(definition.id, definition.version, tuple(nodes), tuple(edges))


def _reachable(edges: Sequence[Edge]) -> set[str]:
    reached, frontier = {TRIGGER}, [TRIGGER]
    while frontier:
        source = frontier.pop()
        for edge in edges:
            if edge.source == source and edge.target not in reached:
                reached.add(edge.target)
                frontier.append(edge.target)
    return reached
