"""The consumer process's start-up errors, one line each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _consume(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "TEMPORAL_", "KAFKA_"))}
    env.update({"PYTHONPATH": str(REPO), "EVENTFLOW_CACHE_DIR": str(tmp_path), **environment})
    return subprocess.run([sys.executable, "-m", "eventflow.cli", "consume"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_taken_metrics_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _consume(tmp_path, EVENTFLOW_METRICS_PORT=str(port), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                          TEMPORAL_ADDRESS="127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"eventflow: EVENTFLOW_METRICS_PORT: cannot listen on 0.0.0.0:{port}: another process holds the port; "
        "set a free port"]


def test_a_missing_kafka_ca_file_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    result = _consume(tmp_path, EVENTFLOW_METRICS_PORT="0", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                      TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL="SSL",
                      EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION=str(missing))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"eventflow: EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION: file {missing} does not exist"]


def test_a_kafka_setting_librdkafka_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("not a certificate\n")
    result = _consume(tmp_path, EVENTFLOW_METRICS_PORT="0", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                      TEMPORAL_ADDRESS="127.0.0.1:1", EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL="SSL",
                      EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION=str(not_a_certificate))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("eventflow: EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION: librdkafka refused the Kafka client "
                           "settings: Failed to create admin client: ssl.ca.location failed")
