"""Session fixtures: helm and promtool, built from the Go module proxy into the cache on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import tools
from devstack.errors import DevstackError


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools.helm()


@pytest.fixture(scope="session")
def promtool() -> Path:
    try:
        return tools.promtool()
    except DevstackError as exc:
        # promtool is a large module (every service-discovery SDK); if it cannot be built here the
        # rule unit tests cannot run. helm's rendering and the metric-name checks still do.
        pytest.skip(f"promtool could not be provisioned: {exc}")
