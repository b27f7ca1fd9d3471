"""``python -m bench [--quick] [--soak-seconds N] [--outage-seconds N] [--fault-* ...] [--segment-events N] [--broadcast-* ...] [--entry-* ...] [--output FILE] [--no-docs] [--logs DIR]``.

Starts its own Kafka broker, Temporal dev server and PostgreSQL server, runs every phase on them (bench/phases.py),
writes the raw figures as JSON, prints the table and each target as met or missed. A full run also
rewrites the results section of docs/benchmarks.md; ``--quick`` (small sizes, short soak) never does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.phases import QUICK, BenchConfig, Servers, run
from bench.processes import free_port, free_port_pair
from bench.progress import phase
from bench.report import cpu_table, figures_table, update_docs
from core import logs
from devstack.kafka import KafkaServer
from devstack.postgres import PostgresServer
from devstack.stack import SEARCH_ATTRIBUTES
from devstack.temporal import TemporalDevServer
from store import migrate


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and a short soak (< 3 minutes)")
    parser.add_argument("--soak-seconds", type=float, help="soak duration (default 600, 20 with --quick)")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/latest.json, "
                                                    "bench/results/quick.json with --quick)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--logs", type=Path, help="keep the Eventflow processes' logs in this folder")
    outage = parser.add_argument_group("database-outage phase")
    outage.add_argument("--outage-seconds", type=float, help="how long PostgreSQL is stopped (default 30)")
    outage.add_argument("--outage-rate", type=float, help="notifications/s during the phase (default 5)")
    faults = parser.add_argument_group("fault phase (0 events skips it)")
    faults.add_argument("--fault-events", type=int, help="events produced (default 1200)")
    faults.add_argument("--fault-rate", type=float, help="their rate per second (default 8)")
    faults.add_argument("--fault-gap-seconds", type=float, help="from the end of one fault to the next (default 5)")
    faults.add_argument("--fault-process-down-seconds", type=float,
                        help="a killed consumer or worker restarts after (default 5)")
    faults.add_argument("--fault-temporal-down-seconds", type=float,
                        help="the killed Temporal server restarts after (default 20)")
    faults.add_argument("--fault-storm-seconds", type=float, help="the 503 storm lasts (default 15)")
    faults.add_argument("--fault-report-window-seconds", type=float,
                        help="EVENTFLOW_SEND_REPORT_WINDOW_SECONDS of the workers (default 60)")
    audiences = parser.add_argument_group("audience phases (each needs the run's PostgreSQL; 0 skips one)")
    audiences.add_argument("--segment-events", type=int,
                           help="events per half of the segment-cost phase, without and with 5 segments (default "
                                "4000); 0 also skips the segment-entry phase, which runs on its consumer")
    audiences.add_argument("--broadcast-members", type=int, help="members of the broadcast's segment (default 10000)")
    audiences.add_argument("--broadcast-batch-size", type=int, help="recipients per batch activity (default 500)")
    audiences.add_argument("--broadcast-rate", type=float, help="the broadcast's pace per second (default 100000)")
    audiences.add_argument("--entry-events", type=int, help="profile updates entering a segment (default 300)")
    audiences.add_argument("--entry-rate", type=float, help="their rate per second (default 20)")
    return parser.parse_args()


def _configured(args: argparse.Namespace) -> BenchConfig:
    """The base sizes (``--quick`` or the full run) with every size given on the command line."""
    config = QUICK if args.quick else BenchConfig()
    if args.soak_seconds:
        config = dataclasses.replace(config, soak_seconds=args.soak_seconds)
    outage = {field: value for field, value in (("down_seconds", args.outage_seconds),
                                                ("rate_per_second", args.outage_rate)) if value is not None}
    faults = {field: value for field, value in (
        ("events", args.fault_events), ("rate_per_second", args.fault_rate), ("gap_seconds", args.fault_gap_seconds),
        ("process_down_seconds", args.fault_process_down_seconds),
        ("temporal_down_seconds", args.fault_temporal_down_seconds), ("storm_seconds", args.fault_storm_seconds),
        ("report_window_seconds", args.fault_report_window_seconds)) if value is not None}
    audiences = {field: value for field, value in (
        ("segment_events", args.segment_events), ("broadcast_members", args.broadcast_members),
        ("broadcast_batch_size", args.broadcast_batch_size), ("broadcast_rate_per_second", args.broadcast_rate),
        ("entry_events", args.entry_events), ("entry_rate_per_second", args.entry_rate)) if value is not None}
    return dataclasses.replace(config, outage=dataclasses.replace(config.outage, **outage),
                               faults=dataclasses.replace(config.faults, **faults),
                               audiences=dataclasses.replace(config.audiences, **audiences))


async def _run_on(kafka: KafkaServer, temporal: TemporalDevServer, postgres: PostgresServer, config: BenchConfig,
                  workdir: Path) -> dict[str, Any]:
    client = await Client.connect(temporal.address)
    await migrate(postgres.url)
    pids = {"temporal server": temporal.pid, "kafka broker": kafka.pid, "postgresql server": postgres.pid}
    servers = Servers({"bootstrap.servers": kafka.bootstrap_servers}, client, temporal.address,
                      {name: pid for name, pid in pids.items() if pid is not None}, database_url=postgres.url,
                      database=postgres)
    return await run(servers, config, workdir)


def _compile_bytecode() -> None:
    """Compiles the project's modules, as the image does at install (Dockerfile: ``compileall``).

    With ``PYTHONDONTWRITEBYTECODE`` set (as on these machines) a dev tree has no bytecode, and
    Temporal's sandbox, which re-imports the workflow modules for every workflow it creates, would
    compile their source each time: a cost a deployed worker does not pay, measured as Eventflow's.
    """
    root = Path(__file__).resolve().parents[1]
    packages = ["core", "store", "eventflow", "events", "journeys", "consumer", "workflows", "activities"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], cwd=root, check=True)


def main() -> int:
    args = _arguments()
    config = _configured(args)
    output = args.output or Path("bench/results/quick.json" if args.quick else "bench/results/latest.json")
    logs.configure("json", level=logging.WARNING)
    _compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="eventflow-bench-") as scratch:
        workdir = Path(scratch)
        kafka = KafkaServer(workdir / "kafka", port=free_port_pair())
        temporal = TemporalDevServer(workdir / "temporal", port=free_port(), ui_port=None,
                                     search_attributes=SEARCH_ATTRIBUTES, persistent=False)
        postgres = PostgresServer(workdir / "postgres", port=free_port(), persistent=False)
        phase("starting a dedicated Kafka broker, Temporal dev server and PostgreSQL server")
        temporal.start()
        try:
            kafka.start()
            postgres.start()
            try:
                results = asyncio.run(_run_on(kafka, temporal, postgres, config, workdir))
            finally:
                postgres.stop()
                kafka.stop()
        finally:
            temporal.stop()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in [*workdir.glob("*.log"), *workdir.glob("*/*.log")]:
                    shutil.copy(log, args.logs / log.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(figures_table(results))
    print()
    print(cpu_table(results))
    print()
    for target, met in results["targets_met"].items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    for name in results["phases_not_run"]:
        print(f"not run: {name}")
    if results["settings_not_in_this_tree"]:
        print(f"note: settings this tree does not declare (not set): {', '.join(results['settings_not_in_this_tree'])}")
    if not args.quick and not args.no_docs:
        update_docs(results, "python -m bench" + "".join(f" {arg}" for arg in sys.argv[1:] if arg != "--no-docs"))
        print("updated docs/benchmarks.md")
    print(f"raw figures: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
