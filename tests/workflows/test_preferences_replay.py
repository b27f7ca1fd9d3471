"""Recorded ``CustomerPreferences`` histories replay across the rolling-caps change (``workflow.patched``).

``histories/preferences/daily_cap-before-rolling-caps.json`` was recorded with the code before
rolling caps (main at 3c241fa): two sends reserved under a daily cap of 2, a third deferred.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, Worker

from activities.ledger import Completion, Reservation, ReserveRequest
from activities.outcomes import LedgerState, ReserveDecision
from workflows.preferences import (
    RESERVE_SEND_UPDATE,
    SEND_COMPLETED_SIGNAL,
    CustomerPreferences,
    PreferencesInput,
    preferences_workflow_id,
)

HISTORIES = sorted((Path(__file__).resolve().parent / "histories" / "preferences").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_preferences_history_from_before_rolling_caps_replays(path: Path) -> None:
    assert HISTORIES, "no recorded preferences histories"
    await Replayer(workflows=[CustomerPreferences]).replay_workflow(WorkflowHistory.from_json(path.stem,
                                                                                             path.read_text()))


async def test_a_history_with_rolling_caps_and_priorities_replays(temporal_client: Client, unique: str) -> None:
    customer, queue = f"c-{unique}", f"q-{unique}"
    async with Worker(temporal_client, task_queue=queue, workflows=[CustomerPreferences]):
        handle = await temporal_client.start_workflow(CustomerPreferences.run, PreferencesInput(customer),
                                                      id=preferences_workflow_id(customer), task_queue=queue)
        decisions = []
        for key, priority in (("a", "normal"), ("b", "normal"), ("c", "high"), ("d", "transactional")):
            idempotency_key = f"journey:{key}:{uuid.uuid4().hex[:6]}/s"
            reservation = await handle.execute_update(RESERVE_SEND_UPDATE, ReserveRequest(
                idempotency_key=idempotency_key, customer_id=customer, channel="email",
                caps="all:week=2", priority=priority, attempt=1, lease_seconds=30), result_type=Reservation)
            decisions.append(reservation.decision)
            if reservation.decision is ReserveDecision.SEND:
                await handle.signal(SEND_COMPLETED_SIGNAL, Completion(idempotency_key, customer, "email",
                                                                      LedgerState.DELIVERED, attempt=1))
        history = await handle.fetch_history()
        await handle.terminate("replayed by the test")

    assert decisions == [ReserveDecision.SEND, ReserveDecision.CAPPED, ReserveDecision.SEND, ReserveDecision.SEND]
    await Replayer(workflows=[CustomerPreferences]).replay_workflow(history)


def test_histories_span_the_delivery_feedback_change() -> None:
    """One history from main before delivery feedback, one with reports, a bounce and a STOP applied
    (``python -m tests.workflows.record_preference_histories``); both replay above."""
    texts = {p.stem: p.read_text() for p in HISTORIES}
    assert "delivery_report" not in texts["main-8d044fb-before-delivery-feedback"]
    newer = texts["with-delivery-feedback"]
    assert "delivery_report" in newer and "contact_keyword" in newer and "MARKER_RECORDED" in newer
