"""``python -m bench [--smoke] [--output FILE]``: runs the bridge benchmark on its own local servers."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.bridge import SMOKE, BenchConfig, Servers, run
from bench.progress import phase
from devstack.kafka import KafkaServer
from devstack.stack import SEARCH_ATTRIBUTES
from devstack.temporal import TemporalDevServer
from eventflow import logs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _table(results: dict[str, Any]) -> str:
    throughput = results["throughput_events_per_second"]
    ratios = results["ratios"]
    latency = results["latency"]
    soak = results["soak"]
    rows = [
        ("ceiling: raw start_workflow", f"{throughput['ceiling_start_workflow']:.0f} starts/s"),
        ("bridge", f"{throughput['bridge']:.0f} events/s (= starts/s)"),
        ("naive loop", f"{throughput['naive']:.1f} events/s"),
        ("unrouted", f"{throughput['unrouted']:.0f} events/s"),
        ("bridge / ceiling", f"{ratios['bridge_vs_ceiling']:.2f}"),
        ("bridge / naive", f"{ratios['bridge_vs_naive']:.1f}"),
        ("end-to-end p50 / p95 / p99", f"{latency['p50_seconds'] * 1000:.0f} / {latency['p95_seconds'] * 1000:.0f} / "
                                       f"{latency['p99_seconds'] * 1000:.0f} ms"),
        ("end-to-end at light load", f"{results['latency_light_load']['rate_per_second']:.0f}/s: "
                                     f"p50 {results['latency_light_load']['p50_seconds'] * 1000:.0f} / "
                                     f"p99 {results['latency_light_load']['p99_seconds'] * 1000:.0f} ms"),
        ("consumer RSS over soak", f"{soak['rss_start_mib']:.0f} -> {soak['rss_end_mib']:.0f} MiB "
                                   f"({soak['growth_ratio'] * 100:+.1f} %, {soak['seconds']:.0f} s)"),
    ]
    lines = [f"{name:<30} {value}" for name, value in rows]
    for phase_name, shares in results["cpu_cores_used_per_phase"].items():
        lines.append(f"cpu cores used, {phase_name}: " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs (CI)")
    parser.add_argument("--soak-seconds", type=float, help="override the soak duration")
    parser.add_argument("--output", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    config = SMOKE if args.smoke else BenchConfig()
    if args.soak_seconds:
        config = BenchConfig(**{**config.__dict__, "soak_seconds": args.soak_seconds})
    logs.configure("json", level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="eventflow-bench-") as scratch:
        workdir = Path(scratch)
        kafka = KafkaServer(workdir / "kafka", port=_free_port())
        temporal = TemporalDevServer(workdir / "temporal", port=_free_port(), ui_port=None,
                                     search_attributes=SEARCH_ATTRIBUTES, persistent=False)
        phase("starting a dedicated Kafka broker and Temporal dev server")
        temporal.start()
        try:
            kafka.start()
            try:
                async def go() -> dict[str, Any]:
                    client = await Client.connect(temporal.address)
                    pids = {"temporal server": temporal.pid, "kafka broker": kafka.pid}
                    servers = Servers({"bootstrap.servers": kafka.bootstrap_servers}, client, temporal.address,
                                      {name: pid for name, pid in pids.items() if pid is not None})
                    return await run(servers, config, workdir)

                results = asyncio.run(go())
            finally:
                kafka.stop()
        finally:
            temporal.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    for target, met in results["targets_met"].items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    print(f"raw figures: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
