"""The ``Broadcast`` workflow's pacing, and its recorded histories replaying."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.workflows.broadcast_scenario import run_broadcast, three_batches
from workflows.broadcast import BroadcastOutcome, BroadcastWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories" / "broadcast").glob("*.json"))


def _timers(history: WorkflowHistory) -> list[timedelta]:
    return [e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
            for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]


async def test_a_batch_that_took_longer_than_the_rate_allows_is_followed_by_no_pause(
        time_skipping_env: WorkflowEnvironment) -> None:
    # 2 recipients at 1,000/s may take 2 ms; each batch takes at least 50 ms of work.
    script = three_batches()
    script.batch_seconds = 0.05

    outcome, history = await run_broadcast(time_skipping_env.client, script, rate_per_second=1000.0)

    assert outcome == BroadcastOutcome("completed", 3)
    assert len(script.asked) == 3
    assert _timers(history) == []


async def test_a_batch_faster_than_the_rate_is_followed_by_the_rest_of_its_time(
        time_skipping_env: WorkflowEnvironment) -> None:
    # 2 recipients at 0.5/s take 4 s: the pause after each full batch is 4 s less the batch's own time.
    outcome, history = await run_broadcast(time_skipping_env.client, three_batches(), rate_per_second=0.5)

    assert outcome == BroadcastOutcome("completed", 3)
    pauses = _timers(history)
    assert len(pauses) == 2
    assert all(timedelta(0) < pause <= timedelta(seconds=4) for pause in pauses)


def test_broadcast_histories_are_recorded_for_each_release() -> None:
    assert {p.stem for p in HISTORIES} >= {"paced-by-timer-after-each-batch", "paced-by-what-each-batch-left"}


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_broadcast_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())

    result = await Replayer(workflows=[BroadcastWorkflow]).replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
