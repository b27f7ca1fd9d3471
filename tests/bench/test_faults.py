"""The fault and outage phases' figures and targets, without servers (the fault phase itself runs in ``make bench``).

The fault phase needs two consumers, two workers, the webhook service and a Temporal server of its
own killed and restarted: far too slow for the suite, so its run is left to ``python -m bench`` and
its report is checked here from made-up inputs on top of a recorded benchmark result.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench.config import FaultConfig
from bench.faults import FaultKind, FaultRecord, last_send_after_last_fault, summarize
from bench.phases import targets
from bench.report import figures_table, results_section

RECORDED = Path(__file__).resolve().parents[2] / "bench" / "results" / "latest.json"
FAULT_TARGET = "fault phase (kills, Temporal restart, 503 storm): 0 missing, 0 duplicates"


def _faults(*, sent: int = 4, duplicates: int = 0, unsettled: int = 0) -> dict[str, Any]:
    produced = ["fault-a", "fault-b", "fault-c", "fault-d"]
    first = {order: 100.0 + index for index, order in enumerate(produced[:sent])}
    records = [FaultRecord(FaultKind.KILL, "worker-1", 20.0, 25.0),
               FaultRecord(FaultKind.PROVIDER_OUTAGE, "sendgrid", 65.0, 80.0),
               FaultRecord(FaultKind.KILL, "worker-2", 70.0, 75.0)]
    figures = summarize(config=FaultConfig(events=4), produced=produced, first_sends=first, duplicates=duplicates,
                        refused=7, faults=records, uncertain={"reported_delivered": 2, "unreported_sent_again": 1},
                        attempts={"sent": sent}, ledger_states={"delivered": sent, "uncertain": unsettled},
                        dead_letters=0, processes_alive={"worker-1": True}, drained=True)
    figures["last_fault_to_last_send_seconds"] = last_send_after_last_fault(figures, [90.0, 95.5])
    return figures


def test_the_fault_figures_count_missing_unsettled_and_time_after_the_last_fault() -> None:
    figures = _faults(sent=3, unsettled=1)

    assert (figures["produced"], figures["sent"], figures["missing"]) == (4, 3, 1)
    assert figures["uncertain_total"] == 3 and figures["ledger_unsettled"] == 1
    assert figures["refused_by_provider_outage"] == 7
    # the outage ended last (80 s), though the worker killed in it came back earlier
    assert figures["last_fault_ended_seconds"] == 80.0
    assert figures["last_fault_to_last_send_seconds"] == 15.5
    assert [f["target"] for f in figures["faults"]] == ["worker-1", "sendgrid", "worker-2"]
    json.dumps(figures, allow_nan=False)


def _results(faults: dict[str, Any], outage_missing: int = 0) -> dict[str, Any]:
    results = copy.deepcopy(json.loads(RECORDED.read_text()))
    results["config"]["outage"] = {"down_seconds": 30.0}
    results["config"]["faults"] = {"events": 4, "rate_per_second": 8.0}
    results["soak"]["postgresql"] = {"rss_start_mib": 60.0, "rss_end_mib": 61.0, "rss_max_mib": 61.5,
                                     "growth_ratio": 0.0167}
    results["database_outage"] = {"down_seconds": 30.0, "rate_per_second": 5.0, "produced": 250,
                                  "sent": 250 - outage_missing, "missing": outage_missing, "duplicates": 0,
                                  "delivered_fraction": (250 - outage_missing) / 250,
                                  "restart_to_last_send_seconds": 4.2}
    results["faults"] = faults
    results["phases_not_run"] = []
    return results


@pytest.mark.parametrize(("faults", "outage_missing", "met"), [
    (_faults(), 0, True),
    (_faults(sent=3), 0, False),
    (_faults(duplicates=1), 0, False),
    (_faults(), 1, False),
])
def test_the_new_targets_are_computed_from_the_figures(faults: dict[str, Any], outage_missing: int,
                                                       met: bool) -> None:
    results = _results(faults, outage_missing)
    judged = targets(results)

    assert judged["PostgreSQL memory flat within 10 % over the soak"]
    assert (judged[FAULT_TARGET] and judged["database outage (30 s): 0 missing, 0 duplicates"]) == met
    results["targets_met"] = judged
    table = figures_table(results)
    assert "**fault phase**" in table and "reported_delivered 2, unreported_sent_again 1" in table
    assert "**database outage**" in table and "**PostgreSQL memory" in table
    assert ("**missed**" in table.split("**fault phase**")[1].split("\n")[0]
            or "**missed**" in table.split("**database outage**")[1].split("\n")[0]) == (not met)
    sizes = results_section(results, "test")
    assert "30 s database outage," in sizes and "fault phase 4 events" in sizes


def test_a_phase_that_did_not_run_is_listed_not_judged() -> None:
    results = _results(_faults())
    del results["faults"], results["database_outage"], results["soak"]["postgresql"]
    results["phases_not_run"] = ["database_outage", "faults"]
    results["targets_met"] = targets(results)

    assert not any(name.startswith(("fault phase", "database outage", "PostgreSQL")) for name in results["targets_met"])
    assert "| faults phase | not run |" in figures_table(results)
