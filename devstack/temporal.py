"""The Temporal CLI dev server (SQLite persistence), built from the Go module proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from devstack import _process, provision
from devstack.errors import ServerStartError


@dataclass(frozen=True)
class TemporalDevServer:
    """A ``temporal server start-dev`` process bound to 127.0.0.1.

    Attributes:
        home: folder for the SQLite file, log and pid file.
        port: frontend gRPC port.
        ui_port: Web UI port; ``None`` runs headless.
        search_attributes: custom search attributes to register, name to type (``Keyword``, ``Int``...).
        persistent: keep state in a SQLite file under ``home`` (else in memory, gone on stop).
    """

    home: Path
    port: int = 7233
    ui_port: int | None = 8233
    search_attributes: Mapping[str, str] = field(default_factory=dict)
    persistent: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    @property
    def log_path(self) -> Path:
        return self.home / "temporal.log"

    @property
    def _pid_path(self) -> Path:
        return self.home / "temporal.pid"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return _process.read_pid(self._pid_path)

    def is_running(self) -> bool:
        return _process.read_pid(self._pid_path) is not None

    def start(self, timeout_seconds: float = 60.0) -> None:
        """Starts the dev server (unless already running) and waits for a health check to pass."""
        if not self.is_running():
            self.home.mkdir(parents=True, exist_ok=True)
            argv = [
                str(provision.temporal_cli()), "server", "start-dev",
                "--ip", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warn",
                "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
            ]
            argv += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
            if self.persistent:
                argv += ["--db-filename", str(self.home / "temporal.db")]
            for name, kind in self.search_attributes.items():
                argv += ["--search-attribute", f"{name}={kind}"]
            _process.start_detached(argv, self.log_path, self._pid_path)
        self.wait_ready(timeout_seconds)

    def wait_ready(self, timeout_seconds: float) -> None:
        """Blocks until the frontend answers a health check."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if not self.is_running():
                raise ServerStartError("Temporal", str(self.log_path), "process exited")
            if asyncio.run(_healthy(self.address)):
                return
            if time.monotonic() > deadline:
                raise ServerStartError("Temporal", str(self.log_path), f"not healthy after {timeout_seconds:.0f}s")
            time.sleep(0.5)

    def stop(self) -> bool:
        return _process.stop(self._pid_path)


async def _healthy(address: str) -> bool:
    try:
        client = await asyncio.wait_for(Client.connect(address), timeout=3)
        return await asyncio.wait_for(client.service_client.check_health(), timeout=3)
    except Exception:  # noqa: BLE001 - any failure to connect means "not ready yet"; the caller bounds the wait
        return False
