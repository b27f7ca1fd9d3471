"""``python -m bench [--quick] [--soak-seconds N] [--output FILE] [--no-docs] [--logs DIR]``.

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
    return parser.parse_args()


async def _run_on(kafka: KafkaServer, temporal: TemporalDevServer, postgres: PostgresServer, config: BenchConfig,
                  workdir: Path) -> dict[str, Any]:
    client = await Client.connect(temporal.address)
    await migrate(postgres.url)
    pids = {"temporal server": temporal.pid, "kafka broker": kafka.pid, "postgresql server": postgres.pid}
    servers = Servers({"bootstrap.servers": kafka.bootstrap_servers}, client, temporal.address,
                      {name: pid for name, pid in pids.items() if pid is not None}, database_url=postgres.url)
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
    config = QUICK if args.quick else BenchConfig()
    if args.soak_seconds:
        config = dataclasses.replace(config, soak_seconds=args.soak_seconds)
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
    if results["settings_not_in_this_tree"]:
        print(f"note: settings this tree does not declare (not set): {', '.join(results['settings_not_in_this_tree'])}")
    if not args.quick and not args.no_docs:
        soak = f" --soak-seconds {args.soak_seconds:g}" if args.soak_seconds else ""
        update_docs(results, f"python -m bench{soak}")
        print("updated docs/benchmarks.md")
    print(f"raw figures: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
