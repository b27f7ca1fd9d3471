"""A journey's ``priority`` and ``caps``: checked with the definition, then copied into its sends.

The journey-level options are defaults for every send (and digest send) of the journey. The
loader folds them into the steps, so a snapshot carries each send's effective priority and caps
and the interpreter needs no journey-level state: a step's own ``priority`` wins, and its own
``caps`` override the journey's per (scope, window).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from activities.caps import CapSet, CapSpecError, Priority
from journeys._yaml import DocPath
from journeys.model import JourneyDocument
from journeys.steps import DigestStep, SendOptions, SendStep, Step, map_steps, sending


def caps_problems(document: JourneyDocument) -> Iterator[tuple[DocPath, str]]:
    """Where a ``caps`` text of the journey or of a send breaks the grammar (a window given twice)."""
    if document.caps is not None:
        yield from _problem(("caps",), document.caps)
    for step, where in sending(document.steps):
        if step.send.caps is not None:
            yield from _problem((*where, "caps"), step.send.caps)


def _problem(where: DocPath, text: str) -> Iterator[tuple[DocPath, str]]:
    try:
        CapSet.parse(text)
    except CapSpecError as exc:
        yield where, f"caps {text!r}: {exc}"


def with_journey_defaults(steps: Sequence[Step], priority: Priority | None, caps: str | None) -> tuple[Step, ...]:
    """``steps`` with the journey's ``priority`` and ``caps`` in every send that does not override them."""
    if priority is None and caps is None:
        return tuple(steps)
    journey_caps = CapSet.parse(caps) if caps is not None else None

    def fold(options: SendOptions) -> SendOptions:
        own = options.priority if options.priority is not None else priority
        merged = options.caps
        if journey_caps is not None:
            step_caps = CapSet.parse(options.caps) if options.caps is not None else CapSet()
            merged = str(journey_caps.overridden_by(step_caps))
        return dataclasses.replace(options, priority=own, caps=merged)

    def change(step: Step) -> Step:
        match step:
            case SendStep(send=options) | DigestStep(send=options):
                return dataclasses.replace(step, send=fold(options))
        return step

    return map_steps(steps, change)
