"""Fixtures for the event-contract tests: a real Schema Registry, and a scriptable local one.

``apicurio`` is a real Apicurio Registry (Confluent-compatible API), provisioned from Maven
Central by `devstack.registry` and started once per session. ``registry`` is the local server
in `tests.events.registry_server`, used only where a test must make the registry fail, demand
credentials, or count requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.registry import start_registry
from tests.events.registry_server import LocalRegistry


@pytest.fixture(scope="session")
def apicurio() -> Iterator[str]:
    """The base URL of a real, in-memory Apicurio Registry for this session; subjects are per test."""
    server = start_registry()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_registry() -> Iterator[LocalRegistry]:
    """One scriptable Confluent-compatible registry over real HTTP for the session."""
    registry = LocalRegistry().start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def registry(local_registry: LocalRegistry) -> Iterator[LocalRegistry]:
    """The session's local registry, answering normally again after the test."""
    yield local_registry
    local_registry.fail_with(None)
