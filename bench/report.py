"""The benchmark's figures as a Markdown table (printed, and written into docs/benchmarks.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START = "<!-- bench-results:start -->"
END = "<!-- bench-results:end -->"


def _seconds(value: float | None) -> str:
    return "inf" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _maybe_seconds(value: float | None) -> str:
    """A duration that may be unknown (nothing was sent): a dash, not infinity."""
    return "—" if value is None else _seconds(value)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _latency(figures: Mapping[str, Any]) -> str:
    return (f"{figures['rate_per_second']:g}/s: p50 {_seconds(figures['p50_seconds'])}, "
            f"p95 {_seconds(figures['p95_seconds'])}, p99 {_seconds(figures['p99_seconds'])}; "
            f"{figures['delivered']}/{figures['produced']} delivered ({figures['delivered_fraction'] * 100:.1f} %)")


def figures_table(results: Mapping[str, Any]) -> str:
    """Measures, ratios and targets as one Markdown table."""
    raw, ratios, met = results["raw"], results["ratios"], results["targets_met"]
    capacity, hot, soak = results["capacity"], results["hot_customer"], results["soak"]
    bridge = results["bridge"]

    def verdict(prefix: str) -> str:
        matches = [ok for name, ok in met.items() if name.startswith(prefix)]
        return "—" if not matches else "met" if all(matches) else "**missed**"

    rows = [
        ("raw ceiling: start + one no-op activity, before the first capacity round and after each",
         f"{raw['notifications_per_second']:.1f} /s mean "
         f"({_readings(raw.get('notifications_per_second_readings'), 1)})",
         "", ""),
        ("full path (`eventflow consume` + `eventflow worker`, SendGrid stub), by round",
         f"{capacity['notifications_per_second']:.1f} notifications/s median "
         f"({_readings(capacity.get('notifications_per_second_by_round'), 1)}; "
         f"{capacity['sent']}/{capacity['events']} sent)", "", ""),
        ("**full path / raw ceiling**: the median round against the ceilings either side of it",
         f"{_ratio(ratios['full_path_vs_raw_ceiling'])} (rounds: {_readings(capacity.get('ratio_by_round'), 2)})",
         "≥ 0.8", verdict("full path")),
        ("full path / raw ceiling, each phase over the middle 90 % of its completions (steady state; not the "
         "target's estimator)",
         f"{_ratio(ratios.get('full_path_vs_raw_ceiling_middle_90'))} "
         f"(rounds: {_readings(capacity.get('ratio_middle_90_by_round'), 2)}; raw "
         f"{_readings(raw.get('notifications_per_second_middle_90_readings'), 1)} /s, full path "
         f"{_readings(capacity.get('notifications_per_second_middle_90_by_round'), 1)} /s)", "", ""),
        ("raw start -> activity floor, one at a time",
         f"p50 {_seconds(raw['start_to_activity_floor_p50_seconds'])}, "
         f"p99 {_seconds(raw['start_to_activity_floor_p99_seconds'])}", "", ""),
        ("produce -> provider call, light load", _latency(results["latency_light_load"]), "", ""),
        ("**light-load p50 / raw floor**", _ratio(ratios["light_p50_vs_raw_floor"]), "≤ 1.5", verdict("light-load")),
        ("**produce -> provider call, 50 % of capacity**", _latency(results["latency_half_capacity"]),
         "p99 ≤ 500 ms, 100 % delivered", verdict("p99")),
        ("Temporal cost per notification: full path vs raw minimum (workflows, history events, actions)",
         _cost(capacity.get("temporal_cost"), raw.get("temporal_cost")), "events ≤ 1.3 × raw, 1 workflow",
         verdict("history events")),
        ("raw `start_workflow` ceiling: before the first bridge round and after each",
         f"{raw['start_workflow_per_second']:.0f} starts/s mean "
         f"({_readings(raw.get('start_workflow_per_second_readings'))})",
         "", ""),
        ("bridge (`eventflow consume`, no worker), by round",
         f"{bridge['starts_per_second']:.0f} starts/s median ({_readings(bridge.get('starts_per_second_by_round'))})",
         "", ""),
        ("**bridge / raw start ceiling**: the median round against the ceilings either side of it",
         f"{_ratio(ratios['bridge_vs_raw_start_ceiling'])} (rounds: {_readings(bridge.get('ratio_by_round'), 2)})",
         "≥ 0.9", verdict("bridge")),
        ("raw confluent-kafka consume loop", f"{raw['consume_loop_events_per_second']:.0f} events/s", "", ""),
        ("unrouted events (`eventflow consume`)", f"{results['unrouted']['events_per_second']:.0f} events/s", "", ""),
        ("**unrouted / raw consume**", _ratio(ratios["unrouted_vs_raw_consume"]), "≥ 0.5", verdict("unrouted")),
        (f"**hot customer**: {hot['journeys']} journeys at once, cap {hot['daily_cap']}",
         f"{hot['sent']} sent, {hot['capped']} capped, {hot['errors']} errors, {hot['duplicates']} duplicates",
         f"{hot['daily_cap']} / {hot['journeys'] - hot['daily_cap']} / 0 / 0", verdict("hot customer")),
        ("duplicate sends, all phases (at the stub, end of run)",
         str(sum(results["duplicates_by_phase_at_end"].values())), "0", verdict("no duplicate")),
    ]
    for key, label in (("capacity", "capacity phase"), ("hot_customer", "hot-customer phase")):
        attempts = results[key].get("worker_send_attempts") or {}
        rows.append((f"worker send attempts by outcome, {label}",
                     ", ".join(f"{outcome} {n}" for outcome, n in attempts.items()) or "—", "", ""))
    for name in ("consumer", "worker"):
        process = soak[name]
        rows.append((f"**{name} RSS over a {soak['seconds']:.0f} s soak**",
                     f"{process['rss_start_mib']:.0f} -> {process['rss_end_mib']:.0f} MiB "
                     f"({process['growth_ratio'] * 100:+.1f} %)", "within ± 10 %", verdict(f"{name} RSS")))
    if "postgresql" in soak:
        process = soak["postgresql"]
        cache = (f"; buffer cache touched {process['shared_buffers_touched_start_mib']:.0f} -> "
                 f"{process['shared_buffers_touched_end_mib']:.0f} MiB" if "shared_buffers_touched_end_mib" in process else "")
        tree = (f"; the whole tree, {process['processes_start']} -> {process['processes_end']} processes: "
                f"{process['whole_tree_start_mib']:.0f} -> {process['whole_tree_end_mib']:.0f} MiB "
                f"({process['whole_tree_growth_ratio'] * 100:+.1f} %)" if "whole_tree_growth_ratio" in process else "")
        lasting = f"the {process['lasting_processes']} lasting processes: " if "lasting_processes" in process else ""
        rows.append((f"**PostgreSQL memory over a {soak['seconds']:.0f} s soak** (PSS, postmaster + backends that "
                     "lived through it, without the fixed-size buffer cache)",
                     f"{lasting}{process['rss_start_mib']:.0f} -> {process['rss_end_mib']:.0f} MiB "
                     f"({process['growth_ratio'] * 100:+.1f} %){tree}{cache}", "within ± 10 %",
                     verdict("PostgreSQL memory")))
    rows += _outage_rows(results, verdict)
    rows += _audience_rows(results, verdict)
    rows += _fault_rows(results, verdict)
    for name in results.get("phases_not_run") or ():
        rows.append((f"{name.replace('_', ' ')} phase", "not run", "", ""))
    lines = ["| measure | figure | target | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c or '—'} | {d or '—'} |" for a, b, c, d in rows]
    return "\n".join(lines)


def _outage_rows(results: Mapping[str, Any], verdict: Callable[[str], str]) -> list[tuple[str, str, str, str]]:
    outage = results.get("database_outage")
    if not outage:
        return []
    return [
        (f"**database outage**: PostgreSQL stopped {outage['down_seconds']:g} s mid-stream "
         f"({outage['rate_per_second']:g} notifications/s)",
         f"{outage['sent']}/{outage['produced']} sent ({outage['delivered_fraction'] * 100:.1f} %), "
         f"{outage['missing']} missing, {outage['duplicates']} duplicates", "0 missing, 0 duplicates",
         verdict("database outage")),
        ("database outage: restart -> last send", _maybe_seconds(outage["restart_to_last_send_seconds"]), "", ""),
    ]


def _readings(values: Sequence[float] | None, digits: int = 0) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in values) if values else "one measure"


def _before_after(figures: Mapping[str, Any], name: str, phase: str) -> str:
    """The two measures a mean was taken of (``<name>_before[_<phase>]``, ``<name>_after[_<phase>]``)."""
    suffix = f"_{phase}" if phase else ""
    before, after = figures.get(f"{name}_before{suffix}"), figures.get(f"{name}_after{suffix}")
    return f"before {before:.0f}, after {after:.0f}" if before is not None and after is not None else "one measure"


def _audience_rows(results: Mapping[str, Any], verdict: Callable[[str], str]) -> list[tuple[str, str, str, str]]:
    ratios = results["ratios"]
    rows: list[tuple[str, str, str, str]] = []
    segments = results.get("segments")
    if segments:
        rows += [
            (f"`eventflow consume`, {segments['events']} events (profile update, opt-in, 2 purchases per customer): "
             f"no segment (mean of before and after) / {segments['segments']} segments",
             f"{segments['events_per_second_without_segments']:.0f} "
             f"({_before_after(segments, 'events_per_second_without_segments', '')}) / "
             f"{segments['events_per_second_with_segments']:.0f} events/s", "", ""),
            (f"**segments: with {segments['segments']} / without**", _ratio(ratios.get("segments_vs_no_segments")),
             "≥ 0.8", verdict("segments")),
        ]
    broadcast = results.get("broadcast")
    if broadcast:
        rows += [
            (f"broadcast to {broadcast['members']} members (`Broadcast` workflow, batches of "
             f"{broadcast['batch_size']}, SendGrid stub)",
             f"{broadcast['sends_per_second']:.1f} sends/s; {broadcast['sent']}/{broadcast['members']} sent, "
             f"{broadcast['missing']} missing, {broadcast['duplicates']} duplicates; workflow "
             f"{broadcast['workflow_state']}", "", ""),
            ("**broadcast / raw ceiling**", _ratio(ratios.get("broadcast_vs_raw_ceiling")),
             "≥ 3, each member once", verdict("broadcast")),
            ("broadcast: Temporal cost per recipient (workflows, history events, actions)",
             _one_cost(broadcast["temporal_cost"]), "", ""),
        ]
    entry = results.get("segment_entry")
    if entry:
        rows.append((f"**profile change -> segment entry** (`segment_changes.at`, {entry['segment']})",
                     _latency(entry), "every change entered, once", verdict("segment entry")))
    return rows


def _fault_rows(results: Mapping[str, Any], verdict: Callable[[str], str]) -> list[tuple[str, str, str, str]]:
    faults = results.get("faults")
    if not faults:
        return []
    uncertain = ", ".join(f"{how} {n}" for how, n in faults["uncertain_by_resolution"].items()) or "none"
    return [
        (f"**fault phase**: {faults['produced']} events at {faults['rate_per_second']:g}/s, 2 consumers, 2 workers; "
         "kill -9 worker, consumer, Temporal; 503 storm with a worker killed",
         f"{faults['sent']}/{faults['produced']} sent, {faults['missing']} missing, {faults['duplicates']} duplicates",
         "0 missing, 0 duplicates", verdict("fault phase")),
        ("fault phase: uncertain sends by resolution", uncertain, "", ""),
        ("fault phase: dead letters; ledger rows not settled at the end",
         f"{faults['dead_letters']}; {faults['ledger_unsettled']}", "", ""),
        ("fault phase: end of the last fault -> last send", _maybe_seconds(faults["last_fault_to_last_send_seconds"]),
         "", ""),
    ]


def cpu_table(results: Mapping[str, Any]) -> str:
    """CPU cores each process used in each phase."""
    per_phase: Mapping[str, Mapping[str, float]] = results["cpu_cores_used_per_phase"]
    columns: list[str] = []
    for shares in per_phase.values():
        columns += [name for name in shares if name not in columns]
    lines = ["| phase | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for phase_name, shares in per_phase.items():
        cells = [f"{shares[c]:.2f}" if c in shares else "—" for c in columns]
        lines.append(f"| {phase_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_section(results: Mapping[str, Any], source: str) -> str:
    """The generated part of docs/benchmarks.md."""
    machine, config = results["machine"], results["config"]
    return "\n".join([
        f"Run: `{source}`; {machine['cores']} cores, {machine['memory_gib']} GiB, Python {machine['python']}. "
        f"Sizes: {config['capacity_events']} capacity events, {config['raw_workflows']} raw workflows, "
        f"{config['routed_events']} bridge events, {config['unrouted_events']} unrouted events, "
        f"{config['latency_seconds']:g} s per latency phase, {config['hot_journeys']} hot-customer journeys, "
        f"{config['soak_seconds']:g} s soak{_optional_sizes(results)}.",
        "",
        figures_table(results),
        "",
        "CPU cores used per phase (from `/proc/<pid>/stat`; 1.00 = one core busy for the whole phase):",
        "",
        cpu_table(results),
    ])


def _optional_sizes(results: Mapping[str, Any]) -> str:
    config = results["config"]
    sizes = ""
    if "database_outage" in results:
        sizes += f", {config['outage']['down_seconds']:g} s database outage"
    if "segments" in results:
        sizes += f", {config['audiences']['segment_events']} events per segment-cost half"
    if "segment_entry" in results:
        sizes += (f", {config['audiences']['entry_events']} segment entries at "
                  f"{config['audiences']['entry_rate_per_second']:g}/s")
    if "broadcast" in results:
        sizes += f", a broadcast to {config['audiences']['broadcast_members']} members"
    if "faults" in results:
        sizes += f", fault phase {config['faults']['events']} events at {config['faults']['rate_per_second']:g}/s"
    return sizes


def update_docs(results: Mapping[str, Any], source: str, docs: Path = DOCS) -> None:
    """Replaces the generated section of docs/benchmarks.md (between its markers)."""
    text = docs.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{docs} has no {START} ... {END} section")
    docs.write_text(pattern.sub(lambda _: f"{START}\n{results_section(results, source)}\n{END}", text))


def _cost(full: Mapping[str, Any] | None, raw: Mapping[str, Any] | None) -> str:
    if not full or not raw:
        return "not measured"

    return f"{_one_cost(full)} vs {_one_cost(raw)}"


def _one_cost(cost: Mapping[str, Any]) -> str:
    return (f"{cost['workflows_per_notification']:g} / {cost['history_events_per_notification']:g} / "
            f"{cost['actions_per_notification']:g}")
