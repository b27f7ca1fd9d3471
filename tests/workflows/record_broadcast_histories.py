"""Records ``Broadcast`` histories for the replay test: ``python -m tests.workflows.record_broadcast_histories NAME``.

Runs `tests.workflows.broadcast_scenario.three_batches` on the time-skipping test server, paced at
one recipient per second (so every batch is followed by a pause), and writes the history to
``tests/workflows/histories/broadcast/<NAME>.json``. Keep the histories of earlier releases: they
prove that broadcasts those releases started still replay.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from devstack.provision import TEST_SERVER_STARTUP, test_server
from tests.workflows.broadcast_scenario import run_broadcast, three_batches

HISTORIES = Path(__file__).resolve().parent / "histories" / "broadcast"


async def _record(name: str) -> Path:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server()), test_server_startup_timeout=TEST_SERVER_STARTUP)
    try:
        _, history = await run_broadcast(env.client, three_batches(), rate_per_second=1.0)
    finally:
        await env.shutdown()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json())
    return path


def main() -> None:
    print(asyncio.run(_record(sys.argv[1])))


if __name__ == "__main__":
    main()
