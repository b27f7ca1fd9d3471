"""Provisioning helm and promtool: idempotent, cached, and a one-line error without Go."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack import tools
from devstack.errors import MissingToolError
from tests.helm.conftest import provisioned_or_skipped


def test_the_provisioned_helm_is_the_pinned_version(helm: Path) -> None:
    assert helm.name == f"helm-{tools.HELM_VERSION}"
    result = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True)
    # `go install` sets no version ldflags; helm then reports its built-in major.minor only.
    major_minor = tools.HELM_VERSION.rsplit(".", 1)[0]
    assert result.stdout.strip() in (tools.HELM_VERSION, major_minor)


def test_a_cached_binary_is_reused_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "bin" / f"promtool-{tools.PROMTOOL_MODULE_VERSION}"
    cached.parent.mkdir()
    cached.write_text("#!/bin/sh\n")
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no go: a rebuild would fail
    assert tools.promtool() == cached


def test_missing_go_fails_with_one_line_saying_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingToolError) as raised:
        tools.helm()
    message = str(raised.value)
    assert "'go' is required to build helm" in message and "go.dev" in message
    assert "\n" not in message
    assert not (tmp_path / "bin").exists()


def _unbuildable() -> Path:
    raise MissingToolError("go", "build promtool", "https://go.dev/doc/install")


def test_a_tool_that_cannot_be_provisioned_skips_on_a_laptop_but_fails_in_ci() -> None:
    with pytest.raises(pytest.skip.Exception):
        provisioned_or_skipped("promtool", _unbuildable, environ={})
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        provisioned_or_skipped("promtool", _unbuildable, environ={"CI": "true"})
