"""Recorded ``CustomerPreferences`` histories replay: one written by the release before delivery feedback
(suppression is behind ``workflow.patched``), one with reports, a bounce and a STOP applied.

Recorded with ``python -m tests.workflows.record_preference_histories`` (see its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.preferences import CustomerPreferences

FOLDER = Path(__file__).resolve().parent / "preference_histories"
HISTORIES = sorted(FOLDER.glob("*.json"))


def test_both_recordings_are_present_and_only_the_newer_applies_feedback() -> None:
    texts = {p.stem: p.read_text() for p in HISTORIES}
    assert set(texts) == {"main-before-suppression", "with-delivery-feedback"}
    assert "delivery_report" not in texts["main-before-suppression"]
    kinds = [e["eventType"] for e in json.loads(texts["with-delivery-feedback"])["events"]]
    assert "EVENT_TYPE_MARKER_RECORDED" in kinds  # the suppression patch was taken


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_preferences_history_replays(path: Path) -> None:
    await Replayer(workflows=[CustomerPreferences]).replay_workflow(
        WorkflowHistory.from_json(path.stem, path.read_text()))
