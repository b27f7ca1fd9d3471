"""The worker process's start-up: fail closed on the outbox, one-line errors, journey channels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eventflow.worker_app import journey_channels
from journeys import load_all

REPO = Path(__file__).resolve().parents[2]


def _start_worker(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "TEMPORAL_"))}
    env.update({"PYTHONPATH": str(REPO), "EVENTFLOW_CACHE_DIR": str(tmp_path), "EVENTFLOW_METRICS_PORT": "0",
                "EVENTFLOW_TEMPORAL_METRICS_PORT": "0", **environment})
    return subprocess.run([sys.executable, "-m", "eventflow.cli", "worker"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_shipped_journeys_send_email_and_sms_including_fallbacks() -> None:
    assert journey_channels(load_all()) == {"email", "sms"}


def test_worker_refuses_the_outbox_for_used_channels_outside_dev_mode(tmp_path: Path) -> None:
    result = _start_worker(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_SMS_PROVIDER="outbox")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("eventflow: EVENTFLOW_EMAIL_PROVIDER: is unset (outbox)")
    assert "EVENTFLOW_DEV_MODE=true" in line
    assert not (tmp_path / "outbox.jsonl").exists()
