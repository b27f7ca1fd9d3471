"""A journey's funnel and conversion report from its instances' progress (pure; no Temporal).

``eventflow journeys report ID`` reads every instance (running ones through the status query,
finished ones through their result) into `InstanceView`s and prints `format_report(build(...))`.

Arms: the holdout (customers who entered but received nothing) against everyone else, and for
each ``split`` every variant against that split's control variant, or against the holdout when
the split has no control. Rates use the Wilson interval, differences Newcombe's interval
(`journeys.stats`); lift is the difference relative to the baseline's rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from journeys.goals import HOLDOUT_ARM, WAITABLE_OUTCOMES, Progress
from journeys.stats import Comparison, Interval, Rate, compare

#: Delivery stages of the funnel, each satisfied by the outcomes `WAITABLE_OUTCOMES` lists.
STAGES = ("delivered", "opened", "clicked")


@dataclass(frozen=True)
class InstanceView:
    """What the report needs of one instance."""

    version: int
    progress: Progress
    variants: Mapping[str, str] = field(default_factory=dict)
    running: bool = False
    exit_reason: str | None = None


@dataclass(frozen=True)
class StepFunnel:
    """One step: how many instances reached it, sent on it and saw each delivery stage."""

    step_id: str
    reached: int
    sent: int = 0
    stages: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ArmResult:
    """One arm's conversion and, when it has a baseline, the comparison with it."""

    name: str
    rate: Rate
    baseline: str | None = None
    comparison: Comparison | None = None


@dataclass(frozen=True)
class Report:
    """The whole report."""

    journey_id: str
    versions: tuple[int, ...]
    entered: int
    running: int
    holdout: int
    totals: Mapping[str, int]
    steps: tuple[StepFunnel, ...]
    arms: tuple[ArmResult, ...]
    #: Whether the journey defines a goal (None: not known, e.g. the definition was not found).
    goal_defined: bool | None = None


def _reached_stage(progress: Progress, stage: str, step_id: str | None = None) -> bool:
    wanted = WAITABLE_OUTCOMES[stage]
    return any(f.outcome in wanted and (step_id is None or f.step_id == step_id) for f in progress.delivery)


def _step_order(instances: Sequence[InstanceView]) -> list[str]:
    first_seen: dict[str, int] = {}
    for instance in instances:
        for index, step_id in enumerate(instance.progress.reached):
            first_seen[step_id] = min(index, first_seen.get(step_id, index))
    return sorted(first_seen, key=lambda s: (first_seen[s], s))


def _rate(group: Iterable[InstanceView]) -> Rate:
    members = list(group)
    return Rate(sum(1 for i in members if i.progress.converted), len(members))


def _arms(instances: Sequence[InstanceView]) -> list[ArmResult]:
    held = [i for i in instances if i.progress.holdout]
    treated = [i for i in instances if not i.progress.holdout]
    results: list[ArmResult] = []
    holdout_rate = _rate(held)
    if held:
        results.append(ArmResult(HOLDOUT_ARM, holdout_rate))
        treated_rate = _rate(treated)
        results.append(ArmResult("treated", treated_rate, HOLDOUT_ARM, compare(treated_rate, holdout_rate)))
    splits = sorted({split for i in treated for split in i.variants})
    for split in splits:
        groups: dict[str, list[InstanceView]] = {}
        for instance in treated:
            if split in instance.variants:
                groups.setdefault(instance.variants[split], []).append(instance)
        controls = sorted({v for i in treated if split in i.progress.control and split in i.variants
                           for v in [i.variants[split]]})
        control = controls[0] if controls else None
        for variant in sorted(groups, key=lambda v: (v == control, v)):
            rate = _rate(groups[variant])
            name = f"{split}={variant}"
            if variant == control:
                results.append(ArmResult(f"{name} (control)", rate))
            elif control is not None:
                baseline = _rate(groups[control])
                results.append(ArmResult(name, rate, f"{split}={control}", compare(rate, baseline)))
            elif held:
                results.append(ArmResult(name, rate, HOLDOUT_ARM, compare(rate, holdout_rate)))
            else:
                results.append(ArmResult(name, rate))
    return results


def build(journey_id: str, instances: Sequence[InstanceView], *, goal_defined: bool | None = None) -> Report:
    """Aggregates the instances of one journey (every version given) into a `Report`."""
    steps = []
    for step_id in _step_order(instances):
        reached = [i for i in instances if step_id in i.progress.reached]
        steps.append(StepFunnel(
            step_id=step_id, reached=len(reached), sent=sum(1 for i in reached if step_id in i.progress.sent),
            stages={stage: sum(1 for i in reached if _reached_stage(i.progress, stage, step_id)) for stage in STAGES}))
    totals = {
        "entered": len(instances),
        "sent": sum(1 for i in instances if i.progress.sent),
        **{stage: sum(1 for i in instances if _reached_stage(i.progress, stage)) for stage in STAGES},
        "converted": sum(1 for i in instances if i.progress.converted),
        "exited": sum(1 for i in instances if i.exit_reason is not None),
    }
    return Report(
        journey_id=journey_id, versions=tuple(sorted({i.version for i in instances})), entered=len(instances),
        running=sum(1 for i in instances if i.running), holdout=sum(1 for i in instances if i.progress.holdout),
        totals=totals, steps=tuple(steps), arms=tuple(_arms(instances)), goal_defined=goal_defined)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(interval: Interval | None, *, points: bool = False) -> str:
    if interval is None:
        return "-"
    if points:
        return f"[{100 * interval.low:+.1f}, {100 * interval.high:+.1f}] pp"
    return f"[{_percent(interval.low)}, {_percent(interval.high)}]"


def format_report(report: Report) -> list[str]:
    """The report as the CLI prints it."""
    versions = ", ".join(str(v) for v in report.versions) or "-"
    lines = [f"journey {report.journey_id} (versions {versions}): {report.entered} instances, "
             f"{report.running} running, {report.holdout} held out", "", "funnel"]
    lines += [f"  {name:<10} {count:>7}" for name, count in report.totals.items()]
    if report.goal_defined is False:
        lines.append("  (converted stays 0: the journey defines no goal)")
    lines += ["", "steps", f"  {'step':<24} {'reached':>7} {'sent':>7} " + " ".join(f"{s:>9}" for s in STAGES)]
    for step in report.steps:
        lines.append(f"  {step.step_id:<24} {step.reached:>7} {step.sent:>7} "
                     + " ".join(f"{step.stages.get(s, 0):>9}" for s in STAGES))
    if not report.steps:
        lines.append("  (no instance has reached a step yet)")
    lines += ["", "conversion by arm (95 % Wilson interval; difference: Newcombe hybrid score interval)",
              f"  {'arm':<28} {'n':>6} {'conv':>6} {'rate':>7} {'95% CI':<17} {'vs':<20} {'diff':>9} "
              f"{'95% CI of diff':<22} lift"]
    for arm in report.arms:
        line = (f"  {arm.name:<28} {arm.rate.trials:>6} {arm.rate.successes:>6} {_percent(arm.rate.value):>7} "
                f"{_interval(arm.rate.interval):<17}")
        if arm.baseline is not None:
            comparison = arm.comparison
            difference = f"{100 * comparison.difference:+.1f} pp" if comparison else "-"
            lift = "-" if comparison is None or comparison.lift is None else f"{100 * comparison.lift:+.1f}%"
            line += (f" {arm.baseline:<20} {difference:>9} "
                     f"{_interval(comparison.interval if comparison else None, points=True):<22} {lift}")
        lines.append(line.rstrip())
    if not report.arms:
        # Arms exist only where something is compared: a holdout, or a split's variants.
        lines.append("  (no arms: no instance was held out or took a split variant; a journey is measured with "
                     "holdout_percent or a split step, and a goal)")
    return lines


@dataclass(frozen=True)
class StageCounts:
    """Instances that got a send and saw each delivery stage (of one step, one arm or the whole journey)."""

    sent: int = 0
    stages: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Funnel:
    """A journey's funnel as the customer store aggregates it (``eventflow journeys report`` with a store).

    Counts are of instances, each counted once per row however many sends or reports it had. The
    store records sends and delivery reports, not entries or conversions: ``entered`` and ``running``
    come from Temporal's visibility counts, and conversion by arm is left to the instance report.

    Attributes:
        versions: the versions whose sends were recorded.
        entered, running: instances of the journey (Temporal visibility counts; None when unknown).
        totals: over the whole journey.
        steps: per send step, in the order their first sends happened.
        arms: per arm (`journeys.goals.arm_label`).
    """

    journey_id: str
    versions: tuple[int, ...]
    totals: StageCounts
    steps: Sequence[tuple[str, StageCounts]] = ()
    arms: Sequence[tuple[str, StageCounts]] = ()
    entered: int | None = None
    running: int | None = None


def format_funnel(funnel: Funnel) -> list[str]:
    """The store's funnel as the CLI prints it."""
    versions = ", ".join(str(v) for v in funnel.versions) or "-"
    entered = "-" if funnel.entered is None else str(funnel.entered)
    running = "-" if funnel.running is None else str(funnel.running)
    lines = [f"journey {funnel.journey_id} (versions {versions}): {entered} instances, {running} running "
             "(funnel from the customer store)", "", "funnel", f"  {'entered':<10} {entered:>7}",
             f"  {'sent':<10} {funnel.totals.sent:>7}"]
    lines += [f"  {stage:<10} {funnel.totals.stages.get(stage, 0):>7}" for stage in STAGES]
    header = f"{'sent':>7} " + " ".join(f"{s:>9}" for s in STAGES)
    lines += ["", "steps", f"  {'step':<24} {header}"]
    for step_id, counts in funnel.steps:
        lines.append(f"  {step_id:<24} {counts.sent:>7} " + " ".join(f"{counts.stages.get(s, 0):>9}" for s in STAGES))
    if not funnel.steps:
        lines.append("  (no send recorded yet)")
    lines += ["", "sends by arm", f"  {'arm':<28} {header}"]
    for arm, counts in funnel.arms:
        lines.append(f"  {arm:<28} {counts.sent:>7} " + " ".join(f"{counts.stages.get(s, 0):>9}" for s in STAGES))
    lines += ["", "conversion by arm: not kept in the customer store; `eventflow journeys report "
              f"{funnel.journey_id} --from-instances` reads every instance for it"]
    return lines
