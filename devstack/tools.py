"""Idempotent provisioning of the deployment tools the chart tests need: helm and promtool.

Both are built from the Go module proxy with ``go install`` into the cache (``<cache>/bin``), one
versioned binary each, so a second run only checks that the file exists. The first build takes
minutes (module download plus compile); Go's own caches (``~/go/pkg/mod``, ``~/.cache/go-build``)
make rebuilds after a cache wipe much faster.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.cache import cache_dir
from devstack.provision import _run_logged, require_tool

HELM_VERSION = "v3.22.0"
# Prometheus publishes its Go module as v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMTOOL_MODULE_VERSION = "v0.316.0"

_HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
_PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"


@dataclass(frozen=True)
class Tools:
    """Paths of the provisioned deployment tools."""

    helm: Path
    promtool: Path


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialises builds of one tool across processes (parallel test sessions share the cache)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go_install(package: str, version: str, name: str, what: str) -> Path:
    binary = cache_dir() / "bin" / f"{name}-{version}"
    if binary.exists():
        return binary
    go = require_tool("go", f"build {what} from the Go module proxy")
    with _exclusive(cache_dir() / "build" / f"{name}.lock"):
        if binary.exists():  # another process built it while this one waited
            return binary
        _build(go, package, version, name, what, binary)
    return binary


def _build(go: str, package: str, version: str, name: str, what: str, binary: Path) -> None:
    build_dir = cache_dir() / "build" / name
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(build_dir), "CGO_ENABLED": "0"}
    _run_logged(
        [go, "install", f"{package}@{version}"],
        cache_dir() / "logs" / f"provision-{name}.log",
        what,
        env=env,
    )
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Move through a temporary name so a caller checking `exists()` never sees a half-copied binary.
    partial = binary.with_name(binary.name + ".partial")
    shutil.move(str(build_dir / name), partial)
    partial.replace(binary)


def helm() -> Path:
    """Builds helm (v3) from the Go module proxy; returns the binary's path."""
    return _go_install(_HELM_PACKAGE, HELM_VERSION, "helm", "helm")


def promtool() -> Path:
    """Builds Prometheus's promtool from the Go module proxy; returns the binary's path."""
    return _go_install(_PROMTOOL_PACKAGE, PROMTOOL_MODULE_VERSION, "promtool", "promtool")


def provision_tools() -> Tools:
    """Provisions helm and promtool; idempotent."""
    return Tools(helm=helm(), promtool=promtool())
