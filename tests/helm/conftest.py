"""Session fixtures: helm and promtool, built from the Go module proxy into the cache on first use."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from devstack import tools
from devstack.errors import DevstackError


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools.helm()


def provisioned_or_skipped(name: str, provision: Callable[[], Path], environ: Mapping[str, str] | None = None
                           ) -> Path:
    """The tool ``provision`` builds; on a laptop without it the tests skip, in CI (``CI=true``) they fail.

    A skip in CI would pass the pipeline without ever running the rule tests, so there it is a failure.
    """
    try:
        return provision()
    except DevstackError as exc:
        if (os.environ if environ is None else environ).get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{name} could not be provisioned in CI (CI=true), where its tests must run: {exc}")
        pytest.skip(f"{name} could not be provisioned: {exc}")


@pytest.fixture(scope="session")
def promtool() -> Path:
    # promtool is a large module (every service-discovery SDK); if it cannot be built on a laptop the
    # rule unit tests cannot run there. helm's rendering and the metric-name checks still do.
    return provisioned_or_skipped("promtool", tools.promtool)
