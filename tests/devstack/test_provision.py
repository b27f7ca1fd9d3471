"""Provisioning is cached and idempotent, and a missing tool fails with one clear line."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devstack import MissingToolError, browser, kafka, provision, registry
from devstack.cache import cache_dir
from devstack.errors import ProvisionError


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


def test_the_registry_build_fails_on_checksum_mismatches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both of Apicurio's Maven runs use ``-C``, as the Kafka libraries' does."""
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "mvn-calls"
    # A stand-in Maven: records its arguments, lays down the app jar `dependency:copy` would fetch,
    # and fails the `package` run (the test only needs every invocation's flags).
    (tools / "mvn").write_text(
        f"#!{sys.executable}\n"
        "import sys, zipfile, pathlib\n"
        f"with open({str(calls)!r}, 'a') as out: out.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "for arg in sys.argv[1:]:\n"
        "    if arg.startswith('-DoutputDirectory='):\n"
        "        folder = pathlib.Path(arg.split('=', 1)[1]); folder.mkdir(parents=True)\n"
        "        artifact = [a for a in sys.argv if a.startswith('-Dartifact=')][0].split(':')\n"
        "        with zipfile.ZipFile(folder / f'{artifact[1]}-{artifact[2]}.jar', 'w') as jar:\n"
        "            jar.writestr('application.properties', '')\n"
        "sys.exit(0 if 'dependency:copy' in sys.argv else 1)\n")
    (tools / "java").write_text("#!/bin/sh\n")
    for tool in ("mvn", "java"):
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")

    with pytest.raises(ProvisionError):
        registry.apicurio_registry()

    invocations = [line.split() for line in calls.read_text().splitlines()]
    assert len(invocations) == 2
    assert all("-C" in argv or "--strict-checksums" in argv for argv in invocations)


def test_chromium_is_installed_with_apt_get_only_where_it_is_missing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    present = tmp_path / "chromium"
    present.write_text("")
    assert browser.chromium(present, apt_get=None, root=False) == present, "present: nothing is run"
    calls: list[list[str]] = []
    missing = tmp_path / "missing-chromium"

    def fake_run(argv: list[str], log_path: Path, what: str, env: dict[str, str] | None = None) -> None:
        calls.append(argv)
        if "install" in argv:
            missing.write_text("")

    monkeypatch.setattr(browser, "_run_logged", fake_run)
    with pytest.raises(MissingToolError, match="apt-get install -y chromium"):
        browser.chromium(missing, apt_get="/usr/bin/apt-get", root=False)
    assert calls == [], "not root: apt-get is not tried"
    assert browser.chromium(missing, apt_get="/usr/bin/apt-get", root=True) == missing
    assert calls == [["/usr/bin/apt-get", "update"],
                     ["/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "chromium"]]


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes to a leading "-" in URL-safe base64: the storage tool would take the id for an option.
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    cluster_id = kafka.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" + bytes(15)).decode().rstrip("=")
