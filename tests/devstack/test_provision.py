"""Provisioning is cached and idempotent, and a missing tool fails with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack import MissingToolError, provision
from devstack.cache import cache_dir


def test_second_provisioning_needs_no_tool_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    first = provision.provision_all()
    monkeypatch.setenv("PATH", "")

    again = provision.provision_all()

    assert again == first
    assert (first.kafka_libs / ".complete").exists()
    assert first.temporal_cli.is_file() and first.test_server.is_file()
    assert first.kafka_libs.is_relative_to(cache_dir())


def test_missing_maven_on_a_fresh_cache_names_the_tool_and_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "")

    with pytest.raises(MissingToolError) as raised:
        provision.kafka_libs()

    assert raised.value.tool == "mvn"
    message = str(raised.value)
    assert "\n" not in message and "apt-get install -y maven" in message


def test_missing_go_fails_the_cli_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "EVENTFLOW_CACHE_DIR": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "from devstack.provision import temporal_cli; temporal_cli()"],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, capture_output=True, text=True,
        check=False)
    assert result.returncode != 0
    assert "'go' is required to build the Temporal CLI dev server" in result.stderr


def test_cache_dir_honours_the_override_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EVENTFLOW_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "eventflow"
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_maven_fails_on_checksum_mismatches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``mvn -C``: a corrupted or tampered artifact stops provisioning instead of printing a warning."""
    tools = tmp_path / "bin"
    tools.mkdir()
    argv_file = tmp_path / "mvn-argv"
    (tools / "mvn").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{argv_file}"\n'
        'for arg in "$@"; do case "$arg" in -DoutputDirectory=*) mkdir -p "${arg#-DoutputDirectory=}";; esac; done\n')
    (tools / "java").write_text("#!/bin/sh\n")
    for tool in ("mvn", "java"):
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")

    provision.kafka_libs()

    argv = argv_file.read_text().splitlines()
    assert "-C" in argv or "--strict-checksums" in argv
