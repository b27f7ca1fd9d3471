"""Fixtures for the event-contract tests: a local registry and schema variants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.events.registry_server import LocalRegistry


@pytest.fixture(scope="session")
def local_registry() -> Iterator[LocalRegistry]:
    """One Confluent-compatible registry over real HTTP for the session; subjects are per test."""
    registry = LocalRegistry().start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def registry(local_registry: LocalRegistry) -> Iterator[LocalRegistry]:
    """The session registry, answering normally again after the test."""
    yield local_registry
    local_registry.fail_with(None)
