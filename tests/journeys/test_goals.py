"""Holdout buckets and the report's aggregation: invariants over generated customers and instances."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from journeys.goals import DeliveryFact, Progress, holdout_bucket, is_held_out
from journeys.report import InstanceView, build

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)


@given(ids, ids, st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=50))
def test_holdout_is_a_stable_bucket_and_grows_with_the_share(journey: str, customer: str, low: int, high: int) -> None:
    low, high = sorted((low, high))
    assert 0 <= holdout_bucket(journey, customer) < 100
    assert holdout_bucket(journey, customer) == holdout_bucket(journey, customer)
    assert not is_held_out(journey, customer, 0)
    if is_held_out(journey, customer, low):
        assert is_held_out(journey, customer, high)


@st.composite
def instances(draw: st.DrawFn) -> InstanceView:
    holdout = draw(st.booleans())
    variant = draw(st.sampled_from(["a", "b", "ctl"]))
    reached = ["offer", f"send_{variant}"]
    sent = [] if holdout or variant == "ctl" else [f"send_{variant}"]
    outcomes = draw(st.lists(st.sampled_from(["delivered", "opened", "clicked", "bounced"]), max_size=3)) if sent else []
    progress = Progress(holdout=holdout, reached=reached, sent=sent,
                        delivery=[DeliveryFact(sent[0], "email", o, "") for o in outcomes],
                        control=["offer"] if variant == "ctl" else [],
                        converted_at="2026-01-01T00:00:00+00:00" if draw(st.booleans()) else None)
    return InstanceView(version=draw(st.sampled_from([1, 2])), progress=progress, variants={"offer": variant},
                        exit_reason=draw(st.sampled_from([None, "exit event X"])))


@given(st.lists(instances(), max_size=60))
def test_report_counts_are_consistent(views: list[InstanceView]) -> None:
    report = build("j", views)

    totals = report.totals
    assert totals["entered"] == len(views) == report.entered
    assert totals["clicked"] <= totals["opened"] <= totals["delivered"] <= totals["sent"] <= totals["entered"]
    assert totals["converted"] == sum(v.progress.converted for v in views)
    arms = {arm.name: arm for arm in report.arms}
    held = [v for v in views if v.progress.holdout]
    if held:
        assert arms["holdout"].rate.trials + arms["treated"].rate.trials == len(views)
        assert arms["holdout"].rate.successes + arms["treated"].rate.successes == totals["converted"]
    treated = [v for v in views if not v.progress.holdout]
    split_arms = [a for a in report.arms if a.name.startswith("offer=")]
    assert sum(a.rate.trials for a in split_arms) == len(treated)
    for arm in split_arms:
        if arm.baseline is not None:
            assert arm.baseline in ("offer=ctl", "holdout")
            assert arm.comparison is not None
    for step in report.steps:
        assert step.stages["clicked"] <= step.stages["opened"] <= step.stages["delivered"] <= step.reached
        assert step.sent <= step.reached
