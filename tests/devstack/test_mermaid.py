"""The Mermaid CLI is provisioned once into the cache from the hash-locked package, and named when it cannot be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import MissingToolError
from devstack.mermaid import MERMAID_CLI_VERSION, installed_mermaid_cli, mermaid_cli

PACKAGE = Path(__file__).resolve().parents[2] / "devstack" / "mermaid"


def test_the_lock_pins_the_version_with_integrity_hashes() -> None:
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    cli = lock["packages"]["node_modules/@mermaid-js/mermaid-cli"]

    assert cli["version"] == MERMAID_CLI_VERSION
    assert json.loads((PACKAGE / "package.json").read_text())["dependencies"] == {
        "@mermaid-js/mermaid-cli": MERMAID_CLI_VERSION}
    assert all("integrity" in entry for name, entry in lock["packages"].items() if name and not entry.get("link"))


def test_a_provisioned_cli_is_found_again_without_any_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    first = installed_mermaid_cli()
    if first is None:
        pytest.skip("the Mermaid CLI is not provisioned here (eventflow dev provision)")
    monkeypatch.setenv("PATH", "")

    assert mermaid_cli() == first and first.is_file()


def test_a_fresh_cache_without_npm_names_the_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "")

    assert installed_mermaid_cli() is None
    with pytest.raises(MissingToolError) as raised:
        mermaid_cli()
    assert raised.value.tool == "npm" and "\n" not in str(raised.value)
