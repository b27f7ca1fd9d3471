"""The benchmark's machinery end to end at tiny sizes on the shared test servers (figures not judged).

Runs every phase of ``python -m bench`` in this process (the Eventflow consumer and worker still
run as their own ``eventflow`` OS processes), then checks the JSON has every figure, percentiles
are taken over every produced event, and the report renders. Like ``make bench`` it runs on a
PostgreSQL server of its own, which its database-outage phase stops for a few seconds. The fault
phase is left out (two consumers, two workers and a Temporal restart take minutes; its report is
checked in test_faults.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from bench.config import AudienceConfig, FaultConfig, OutageConfig
from bench.phases import WARM_UP_EVENTS, BenchConfig, Servers, run
from bench.report import END, START, cpu_table, figures_table, update_docs
from devstack import Endpoints
from devstack.postgres import PostgresServer
from store import migrate

TINY = BenchConfig(partitions=2, concurrency=32, raw_workflows=20, floor_samples=3, routed_events=20, bridge_rounds=2,
                   capacity_rounds=2,
                   unrouted_events=2000, capacity_events=10, latency_seconds=2.0, light_rate_per_second=2.0,
                   drain_seconds=15.0, hot_journeys=6, soak_seconds=3.0, soak_routed_per_second=1.0,
                   soak_unrouted_per_second=20.0, phase_timeout_seconds=45.0,
                   outage=OutageConfig(down_seconds=3.0, lead_seconds=1.5, rate_per_second=2.0, drain_seconds=60.0),
                   faults=FaultConfig(events=0),
                   audiences=AudienceConfig(segment_events=40, broadcast_members=30, broadcast_batch_size=10,
                                            entry_events=4, entry_rate_per_second=8.0, drain_seconds=20.0))


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    """A migrated PostgreSQL server of this test's own: the outage phase stops it (the session's is shared)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = PostgresServer(tmp_path / "postgres", port=port, persistent=False)
    await asyncio.to_thread(server.start)
    try:
        await migrate(server.url)
        yield server
    finally:
        await asyncio.to_thread(server.stop)

LATENCY_FIGURES = {"rate_per_second", "produced", "delivered", "delivered_fraction", "p50_seconds", "p95_seconds",
                   "p99_seconds", "duplicates"}


def _check_latency(figures: dict[str, Any]) -> None:
    assert LATENCY_FIGURES <= set(figures)
    assert figures["produced"] >= 1
    assert 0 <= figures["delivered"] <= figures["produced"]
    assert figures["delivered_fraction"] == pytest.approx(figures["delivered"] / figures["produced"], abs=1e-4)
    for fraction in (50, 95, 99):
        # null exactly when that rank falls on an undelivered event
        rank = max(1, math.ceil(fraction / 100 * figures["produced"]))
        assert (figures[f"p{fraction}_seconds"] is None) == (rank > figures["delivered"])


@pytest.mark.timeout(210)
async def test_every_phase_runs_and_reports_every_figure(endpoints: Endpoints, kafka_config: dict[str, str],
                                                        temporal_client: Client, tmp_path: Path,
                                                        own_postgres: PostgresServer) -> None:
    servers = Servers(dict(kafka_config), temporal_client, endpoints.temporal_address,
                      database_url=own_postgres.url, database=own_postgres)
    results = await run(servers, TINY, tmp_path)
    json.dumps(results, allow_nan=False)  # valid JSON: an infinite percentile is null, not Infinity

    raw = results["raw"]
    for figure in ("start_workflow_per_second", "notifications_per_second", "consume_loop_events_per_second",
                   "start_to_activity_floor_p50_seconds", "start_to_activity_floor_p99_seconds"):
        assert raw[figure] > 0, figure
    bridge = results["bridge"]
    assert bridge["starts_per_second"] > 0
    # A raw start phase before the first bridge round and after each; every one of them deletes its starts.
    readings = raw["start_workflow_per_second_readings"]
    assert len(readings) == TINY.bridge_rounds + 1 and min(readings) > 0
    assert raw["start_workflow_per_second"] == pytest.approx(sum(readings) / len(readings), abs=0.01)
    assert len(bridge["starts_per_second_by_round"]) == len(bridge["ratio_by_round"]) == TINY.bridge_rounds
    assert results["ratios"]["bridge_vs_raw_start_ceiling"] == pytest.approx(
        sum(bridge["ratio_by_round"]) / TINY.bridge_rounds, abs=1e-3)  # the median of two rounds
    starts_phases, raw_phases = 2 * TINY.bridge_rounds + 1, TINY.capacity_rounds + 1
    deleted = results["workflows_deleted_after_phase"]
    # The first raw notification phase also timed the floor; the later ones started one warm-up workflow.
    assert list(deleted.values())[:starts_phases + raw_phases] == (
        [TINY.routed_events] * starts_phases + [TINY.floor_samples + TINY.raw_workflows]
        + [1 + TINY.raw_workflows] * TINY.capacity_rounds)
    assert results["unrouted"]["events_per_second"] > 0
    capacity = results["capacity"]
    assert capacity["rounds"] == TINY.capacity_rounds
    assert capacity["events"] == capacity["sent"] == TINY.capacity_events * TINY.capacity_rounds
    assert capacity["notifications_per_second"] > 0
    assert len(capacity["notifications_per_second_by_round"]) == len(capacity["ratio_by_round"]) == 2
    # The cost is read over every round's notifications (each journey: start, one send).
    assert capacity["temporal_cost"]["workflows_per_notification"] == 1.0
    notifications = raw["notifications_per_second_readings"]
    assert len(notifications) == TINY.capacity_rounds + 1 and min(notifications) > 0
    assert results["ratios"]["full_path_vs_raw_ceiling"] == pytest.approx(sum(capacity["ratio_by_round"]) / 2,
                                                                          abs=1e-3)
    # The steady-state figures beside them: every phase again over the middle 90 % of its completions.
    assert capacity["warm_up_events"] == min(WARM_UP_EVENTS, TINY.capacity_events)  # not among the rounds' events
    assert len(capacity["notifications_per_second_middle_90_by_round"]) == len(capacity["ratio_middle_90_by_round"]) == 2
    assert len(raw["notifications_per_second_middle_90_readings"]) == TINY.capacity_rounds + 1
    assert min(raw["notifications_per_second_middle_90_readings"]) > 0
    assert results["ratios"]["full_path_vs_raw_ceiling_middle_90"] == pytest.approx(
        sum(capacity["ratio_middle_90_by_round"]) / 2, abs=1e-3)
    _check_latency(results["latency_light_load"])
    _check_latency(results["latency_half_capacity"])
    hot = results["hot_customer"]
    assert {"journeys", "daily_cap", "sent", "capped", "errors", "duplicates"} <= set(hot)
    assert hot["journeys"] == TINY.hot_journeys
    assert hot["sent"] + hot["capped"] + hot["errors"] == TINY.hot_journeys
    for phase in ("capacity", "latency_light_load", "latency_half_capacity", "hot_customer", "soak",
                  "database_outage"):
        assert results["duplicates_by_phase_at_end"][phase] >= results[phase]["duplicates"] >= 0
        assert "worker_send_attempts" in results[phase]
    assert sum(capacity["worker_send_attempts"].values()) >= capacity["events"]  # read from the worker
    soak = results["soak"]
    for process in ("consumer", "worker", "postgresql"):
        assert soak[process]["rss_start_mib"] > 0
        assert "growth_ratio" in soak[process]
    assert soak["postgresql"]["shared_buffers_touched_end_mib"] > 0  # the buffer cache, apart from the backends
    outage = results["database_outage"]
    assert outage["down_seconds"] == TINY.outage.down_seconds and outage["produced"] >= 1
    assert outage["sent"] + outage["missing"] == outage["produced"]
    assert {"duplicates", "delivered_fraction", "restart_to_last_send_seconds", "sent_while_down",
            "consumer_retries", "processes_alive"} <= set(outage)
    assert results["phases_not_run"] == ["faults"]
    assert results["cpu_cores_used_per_phase"]["database outage"]["postgresql server"] >= 0
    assert set(results["ratios"]) == {"full_path_vs_raw_ceiling", "full_path_vs_raw_ceiling_middle_90",
                                      "bridge_vs_raw_start_ceiling", "unrouted_vs_raw_consume", "light_p50_vs_raw_floor",
                                      "segments_vs_no_segments", "broadcast_vs_raw_ceiling"}
    segments = results["segments"]
    assert segments["segments"] == 5 and segments["events"] == TINY.audiences.segment_events
    assert segments["events_per_second_without_segments"] > 0 and segments["events_per_second_with_segments"] > 0
    assert segments["events_per_second_without_segments"] == pytest.approx(
        (segments["events_per_second_without_segments_before"] + segments["events_per_second_without_segments_after"])
        / 2, abs=0.1)
    assert segments["members_after"]["bench_repeat_buyers"] == segments["customers"]  # two purchases each
    broadcast = results["broadcast"]
    assert (broadcast["members"], broadcast["planned"], broadcast["sent"]) == (30, 30, 30)
    assert (broadcast["missing"], broadcast["unexpected"], broadcast["workflow_state"]) == (0, 0, "completed")
    assert results["duplicates_by_phase_at_end"]["broadcast"] >= broadcast["duplicates"] >= 0
    assert broadcast["sends_per_second"] > 0 and broadcast["temporal_cost"]["sampled_workflows"] == 1
    entry = results["segment_entry"]
    _check_latency({**entry, "duplicates": entry["entered_more_than_once"]})
    assert entry["produced"] == TINY.audiences.entry_events and entry["segment"] == "bench_french_locale"
    assert results["ratios"]["full_path_vs_raw_ceiling"] > 0
    assert {"raw notification ceiling", "bridge", "full path capacity", "hot customer",
            "soak"} <= set(results["cpu_cores_used_per_phase"])
    assert {"consumer", "worker"} <= set(results["cpu_cores_used_per_phase"]["full path capacity"])
    # ten, PostgreSQL memory, the outage, the three audience phases (the fault phase did not run)
    assert len(results["targets_met"]) == 15
    for cost in (capacity["temporal_cost"], raw["temporal_cost"]):  # read from the histories
        assert cost["workflows_per_notification"] > 0 and cost["history_events_per_notification"] > 0
        assert cost["actions_per_notification"] > 0 and cost["sampled_workflows"] > 0
    assert not any("naive" in target for target in results["targets_met"])

    table = figures_table(results)
    assert "full path / raw ceiling" in table and "hot customer" in table
    assert "| phase |" in cpu_table(results)
    docs = tmp_path / "benchmarks.md"
    shutil.copy(Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md", docs)
    update_docs(results, "smoke", docs)
    written = docs.read_text()
    assert START in written and "| **unrouted / raw consume** |" in written and END in written
    assert "**database outage**" in written and "| faults phase | not run |" in written
    assert "**broadcast / raw ceiling**" in written and "**profile change -> segment entry**" in written
