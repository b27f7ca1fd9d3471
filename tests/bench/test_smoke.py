"""The benchmark runs end to end at smoke size and writes its JSON (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--output", str(output)], cwd=ROOT,
                            capture_output=True, text=True, timeout=570, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    throughput = figures["throughput_events_per_second"]
    assert all(throughput[k] > 0 for k in ("ceiling_start_workflow", "bridge", "naive", "unrouted"))
    assert figures["latency"]["delivered"] == figures["latency"]["events"]
    assert figures["soak"]["rss_start_mib"] > 0
    assert set(figures["targets_met"]) == {
        "bridge >= 0.9 x ceiling", "bridge >= 20 x naive", "unrouted >= 50000 events/s",
        "p99 end-to-end < 1 s at half load", "RSS flat within 10 % over the soak"}
    assert "bridge / ceiling" in result.stdout
