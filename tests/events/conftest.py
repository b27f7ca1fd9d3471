"""Fixtures for the event-contract tests: a real Schema Registry, and a scriptable local one.

``apicurio`` (tests/conftest.py: the schema commands use it too) is a real Apicurio Registry.
``registry`` is the local server
in `tests.events.registry_server`, used only where a test must make the registry fail, demand
credentials, or count requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.events.registry_server import LocalRegistry


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
