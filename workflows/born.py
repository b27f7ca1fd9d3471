"""Behaviour a journey has from its start, without asking a patch.

`workflow.patched` records a marker, and upserts the ``TemporalChangeVersion`` search attribute,
in every new history that reaches it: two history events and a visibility write per notification,
for behaviour every journey started today has anyway. A journey started by this code names those
patches in its input (`workflows.journey.JourneyInput.born_with`) and `has` answers from there
without a marker. A journey started before has no such field in its recorded input, so it asks
the patch exactly as it always did and its history replays unchanged (tests/workflows/test_replay.py).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from temporalio import workflow


@runtime_checkable
class BornWith(Protocol):
    """A workflow that knows the patches its instance has from its start."""

    @property
    def born_with(self) -> frozenset[str]: ...


def has(patch_id: str) -> bool:
    """Whether the running workflow takes the patched path: from its input if it was born with it,
    else as `workflow.patched` answers (recording the marker)."""
    instance = workflow.instance()
    if isinstance(instance, BornWith) and patch_id in instance.born_with:
        return True
    return workflow.patched(patch_id)
