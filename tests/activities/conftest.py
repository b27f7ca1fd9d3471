"""Fixtures for channel tests."""

from tests.activities.provider_stub import provider

__all__ = ["provider"]
