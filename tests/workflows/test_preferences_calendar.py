"""Quiet-hour windows and local days in the customer's timezone."""

from __future__ import annotations

from datetime import UTC, datetime

from workflows._calendar import local_day, next_local_midnight, quiet_window_end


def test_window_wrapping_midnight_ends_the_next_morning() -> None:
    late_evening_berlin = datetime(2026, 11, 25, 21, 30, tzinfo=UTC)  # 22:30 in Berlin
    assert quiet_window_end(late_evening_berlin, "Europe/Berlin", "21:00-08:00") == datetime(
        2026, 11, 26, 7, 0, tzinfo=UTC)


def test_early_morning_inside_the_window_ends_the_same_morning() -> None:
    early_new_york = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # 05:00 in New York
    assert quiet_window_end(early_new_york, "America/New_York", "21:00-08:00") == datetime(
        2026, 11, 25, 13, 0, tzinfo=UTC)


def test_outside_the_window_or_without_one_sends_now() -> None:
    noon_utc = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert quiet_window_end(noon_utc, "UTC", "21:00-08:00") is None
    assert quiet_window_end(noon_utc, "UTC", "") is None
    assert quiet_window_end(noon_utc, "UTC", "09:00-17:00") == datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


def test_window_end_follows_a_daylight_saving_change() -> None:
    # Berlin leaves summer time on 2026-10-25: 08:00 local that morning is 07:00 UTC, not 06:00.
    night = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert quiet_window_end(night, "Europe/Berlin", "21:00-08:00") == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_local_day_and_next_midnight_use_the_customer_timezone() -> None:
    moment = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)  # already the 26th in Tokyo
    assert local_day(moment, "Asia/Tokyo") == "2026-11-26"
    assert local_day(moment, "UTC") == "2026-11-25"
    assert next_local_midnight(moment, "Asia/Tokyo") == datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def test_unknown_timezone_falls_back_to_utc() -> None:
    assert local_day(datetime(2026, 11, 25, 23, 0, tzinfo=UTC), "Mars/Olympus") == "2026-11-25"
