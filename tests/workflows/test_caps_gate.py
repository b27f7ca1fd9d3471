"""The preferences workflow's cap gate over ledger entries, in the customer's calendar (no server needed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from activities.ledger import ReserveRequest
from activities.outcomes import LedgerState, ReserveDecision
from workflows._caps import cap_gate

NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # already 2 December in Tokyo


@dataclass(frozen=True)
class Entry:
    channel: str
    local_day: str
    state: LedgerState = LedgerState.DELIVERED
    priority: str = ""


def _ask(*, caps: str = "sms:week=2", priority: str = "", on_cap: str = "skip", daily_cap: int = 0) -> ReserveRequest:
    return ReserveRequest("j/s", "c", "sms", timezone="Asia/Tokyo", caps=caps, priority=priority, on_cap=on_cap,
                          daily_cap=daily_cap)


def _decision(request: ReserveRequest, entries: list[Entry]) -> ReserveDecision | None:
    reservation = cap_gate(request, entries, NOW)
    return None if reservation is None else reservation.decision


def test_a_deferral_waits_for_the_local_midnight_the_window_frees_on() -> None:
    entries = [Entry("sms", "2026-11-27"), Entry("sms", "2026-12-02")]

    decision = cap_gate(_ask(on_cap="defer", priority="high"), entries, NOW)

    assert decision is not None and decision.decision is ReserveDecision.DEFER
    # 27 November leaves the 7-day window on 4 December; midnight in Tokyo is 15:00 UTC the day before.
    assert decision.not_before == "2026-12-03T15:00:00+00:00"
    assert _decision(_ask(priority="high"), entries) is ReserveDecision.CAPPED


def test_failed_and_transactional_sends_hold_no_slot() -> None:
    entries = [Entry("sms", "2026-12-02", LedgerState.FAILED), Entry("sms", "2026-12-02", priority="transactional"),
               Entry("sms", "2026-12-02", LedgerState.IN_FLIGHT), Entry("sms", "not a day")]

    assert _decision(_ask(priority="high"), entries) is None
    assert _decision(_ask(), entries) is ReserveDecision.CAPPED  # normal priority keeps the last of 2 slots for high


def test_the_legacy_daily_cap_still_applies_first_come_and_unreadable_caps_fail_closed() -> None:
    entries = [Entry("sms", "2026-12-02")]

    assert _decision(_ask(caps="", daily_cap=2, priority="low"), entries) is None
    assert _decision(_ask(caps="", daily_cap=1), entries) is ReserveDecision.CAPPED
    assert _decision(_ask(caps="", daily_cap=1, priority="transactional"), entries) is None
    assert _decision(_ask(caps="sms:daily=1"), []) is ReserveDecision.CAPPED
