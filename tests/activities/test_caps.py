"""Rolling caps and priority (activities/caps.py): the grammar, the windows, and the invariants under hypothesis."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.caps import (
    SCOPES,
    CapLimit,
    CapSet,
    CapSpecError,
    CountedSend,
    Priority,
    Window,
    decide,
    legacy_daily_cap,
    used_in_window,
)
from activities.config import send_policy
from core.errors import ConfigError
from core.vocabulary import CHANNELS

TODAY = date(2026, 12, 1)


def test_text_form_parses_to_a_canonical_sorted_set() -> None:
    caps = CapSet.parse(" email:week=5, day=2 ; all:month=20;")

    assert caps.limits == (CapLimit("all", Window.MONTH, 20), CapLimit("email", Window.DAY, 2),
                           CapLimit("email", Window.WEEK, 5))
    assert str(caps) == "all:month=20;email:day=2,week=5"
    assert CapSet.parse(str(caps)) == caps


@pytest.mark.parametrize(("text", "problem"), [
    ("email:day=2,day=3", "email:day is given twice"),
    ("email:day=2;email:day=1", "email:day is given twice"),
    ("pigeon:day=2", "starts with a scope"),
    ("email:year=2", "unknown window 'year'"),
    ("email:day", "'day' is not window=limit"),
    ("day=2", "starts with a scope"),
])
def test_malformed_caps_say_which_part_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(CapSpecError, match=problem):
        CapSet.parse(text)


def test_worker_setting_is_parsed_once_and_errors_name_the_variable() -> None:
    policy = send_policy({"EVENTFLOW_CAPS": "sms:week=3;all:month=10", "EVENTFLOW_CAPS_PRIORITY_RESERVE": "2"})
    assert str(policy.caps) == "all:month=10;sms:week=3"
    assert policy.cap_reserve == 2
    for bad in ("sms:week=3,week=4", "sms:fortnight=3", "sms=3"):
        with pytest.raises(ConfigError) as caught:
            send_policy({"EVENTFLOW_CAPS": bad})
        assert caught.value.variable == "EVENTFLOW_CAPS"


def test_overrides_replace_per_scope_and_window_and_zero_lifts_a_cap() -> None:
    worker = CapSet.parse("email:day=2,week=5;all:month=20")
    merged = worker.overridden_by(CapSet.parse("email:week=1;all:month=0"))

    assert str(merged) == "all:month=0;email:day=2,week=1"
    assert merged.active() == (CapLimit("email", Window.DAY, 2), CapLimit("email", Window.WEEK, 1))


def test_windows_roll_over_local_days_including_today() -> None:
    week = CapLimit("email", Window.WEEK, 3)
    sends = [CountedSend("email", TODAY - timedelta(days=n)) for n in (0, 6, 7, 29, 30)]

    assert used_in_window(week, sends, TODAY) == 2  # today and 6 days ago; 7 days ago has rolled out
    assert used_in_window(CapLimit("all", Window.MONTH, 9), sends, TODAY) == 4  # 30 days ago is out
    assert used_in_window(CapLimit("sms", Window.DAY, 1), sends, TODAY) == 0


def test_the_last_slot_goes_to_the_higher_priority_and_defer_names_the_day_it_frees() -> None:
    caps = CapSet.parse("email:week=3")
    sends = [CountedSend("email", TODAY - timedelta(days=2)), CountedSend("email", TODAY)]

    normal = decide(caps, "email", Priority.NORMAL, TODAY, sends)
    assert (normal.allowed, normal.blocking) == (False, (CapLimit("email", Window.WEEK, 3),))
    assert normal.frees_on == TODAY + timedelta(days=5)  # the send of two days ago leaves the window
    assert decide(caps, "email", Priority.HIGH, TODAY, sends).allowed
    assert decide(caps, "email", Priority.TRANSACTIONAL, TODAY, sends * 10).allowed
    assert decide(caps, "sms", Priority.LOW, TODAY, sends).allowed  # the cap is per channel


def test_every_priority_keeps_at_least_one_slot_of_a_small_cap() -> None:
    caps = CapSet.parse("all:day=1")
    assert decide(caps, "sms", Priority.LOW, TODAY, []).allowed
    assert not decide(caps, "sms", Priority.HIGH, TODAY, [CountedSend("email", TODAY)]).allowed


def test_the_legacy_daily_cap_is_first_come_first_served_unless_caps_cap_the_day() -> None:
    caps = CapSet.parse("email:week=9")
    first_come = legacy_daily_cap(caps, "email", 2)
    sends = [CountedSend("email", TODAY)]

    assert first_come == (CapLimit("email", Window.DAY, 2),)
    assert decide(caps, "email", Priority.LOW, TODAY, sends, first_come=first_come).allowed
    assert not decide(caps, "email", Priority.LOW, TODAY, sends * 2, first_come=first_come).allowed
    assert legacy_daily_cap(CapSet.parse("email:day=4"), "email", 2) == ()
    assert legacy_daily_cap(caps, "email", 0) == ()


# --- invariants ------------------------------------------------------------------------------------

caps_sets = st.lists(st.builds(CapLimit, st.sampled_from(SCOPES), st.sampled_from(list(Window)),
                               st.integers(0, 6)), max_size=5).map(CapSet.of)


@dataclass(frozen=True)
class Ask:
    channel: str
    priority: Priority
    days_later: int


asks = st.lists(st.builds(Ask, st.sampled_from(CHANNELS), st.sampled_from(list(Priority)), st.integers(0, 4)),
                max_size=60)


def _run(caps: CapSet, reserve: int, requests: list[Ask]) -> list[tuple[Ask, date, bool]]:
    """Feeds the requests through the single-writer decision, as the preferences workflow does."""
    day = TODAY
    granted: list[CountedSend] = []
    log: list[tuple[Ask, date, bool]] = []
    for ask in requests:
        day += timedelta(days=ask.days_later)
        verdict = decide(caps, ask.channel, ask.priority, day, granted, reserve=reserve)
        if verdict.allowed and ask.priority is not Priority.TRANSACTIONAL:
            granted.append(CountedSend(ask.channel, day))
        log.append((ask, day, verdict.allowed))
    return log


def _counted(log: list[tuple[Ask, date, bool]]) -> list[CountedSend]:
    return [CountedSend(ask.channel, day) for ask, day, allowed in log
            if allowed and ask.priority is not Priority.TRANSACTIONAL]


@settings(max_examples=150, deadline=None)
@given(caps_sets, st.integers(0, 3), asks)
def test_no_window_ever_holds_more_than_its_cap_and_transactional_always_passes(
        caps: CapSet, reserve: int, requests: list[Ask]) -> None:
    log = _run(caps, reserve, requests)
    counted = [(ask.channel, day) for ask, day, allowed in log if allowed and ask.priority is not Priority.TRANSACTIONAL]
    for cap in caps.active():
        for _, end, _ in log:  # a window ending between requests holds a subset of one ending on one
            start = cap.window.first_day(end)
            inside = [1 for channel, day in counted if cap.applies_to(channel) and start <= day <= end]
            assert len(inside) <= cap.limit, (cap, end)
    assert all(allowed for ask, _, allowed in log if ask.priority is Priority.TRANSACTIONAL)


@settings(max_examples=150, deadline=None)
@given(caps_sets, st.integers(0, 3), asks, st.sampled_from(CHANNELS))
def test_a_higher_priority_is_allowed_whenever_a_lower_one_is(caps: CapSet, reserve: int, requests: list[Ask],
                                                              channel: str) -> None:
    sends = _counted(_run(caps, reserve, requests))
    today = TODAY + timedelta(days=sum(a.days_later for a in requests))
    order = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.TRANSACTIONAL]
    verdicts = [decide(caps, channel, p, today, sends, reserve=reserve).allowed for p in order]
    assert verdicts == sorted(verdicts)  # once allowed, every higher priority is allowed too


@settings(max_examples=150, deadline=None)
@given(caps_sets, st.integers(0, 3), asks, st.sampled_from(CHANNELS), st.sampled_from([Priority.LOW, Priority.NORMAL]))
def test_a_lower_priority_never_takes_the_slots_kept_for_higher_ones(
        caps: CapSet, reserve: int, requests: list[Ask], channel: str, priority: Priority) -> None:
    sends = _counted(_run(caps, reserve, requests))
    today = TODAY + timedelta(days=sum(a.days_later for a in requests))
    if decide(caps, channel, priority, today, sends, reserve=reserve).allowed:
        for cap in caps.active():
            if cap.applies_to(channel):
                kept = reserve * priority.levels_below_high
                assert used_in_window(cap, sends, today) < max(1, cap.limit - kept)


@settings(max_examples=150, deadline=None)
@given(caps_sets, st.integers(0, 3), asks, st.sampled_from(CHANNELS), st.sampled_from(list(Priority)))
def test_a_capped_send_is_allowed_on_the_day_it_frees_and_not_before(
        caps: CapSet, reserve: int, requests: list[Ask], channel: str, priority: Priority) -> None:
    sends = _counted(_run(caps, reserve, requests))
    today = TODAY + timedelta(days=sum(a.days_later for a in requests))
    verdict = decide(caps, channel, priority, today, sends, reserve=reserve)
    if verdict.allowed:
        return
    assert verdict.frees_on is not None and verdict.frees_on > today
    assert decide(caps, channel, priority, verdict.frees_on, sends, reserve=reserve).allowed
    day_before = verdict.frees_on - timedelta(days=1)
    if day_before > today:
        assert not decide(caps, channel, priority, day_before, sends, reserve=reserve).allowed
