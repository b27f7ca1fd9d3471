"""Errors raised while provisioning or running the local servers."""

from __future__ import annotations


class DevstackError(Exception):
    """Root of the local-server errors."""


class MissingToolError(DevstackError):
    """A command-line tool needed for provisioning is not installed."""

    def __init__(self, tool: str, purpose: str, install_hint: str) -> None:
        super().__init__(f"'{tool}' is required to {purpose} but was not found on PATH; {install_hint}")
        self.tool = tool


class ProvisionError(DevstackError):
    """Fetching or building a server failed."""

    def __init__(self, what: str, log_path: str) -> None:
        super().__init__(f"provisioning {what} failed; see {log_path}")
        self.what = what
        self.log_path = log_path


class ServerStartError(DevstackError):
    """A server process did not become ready in time."""

    def __init__(self, server: str, log_path: str, reason: str) -> None:
        super().__init__(f"{server} did not start ({reason}); see {log_path}")
        self.server = server
        self.log_path = log_path
