"""Where provisioned servers, their data and their logs live: outside any working tree."""

from __future__ import annotations

from pathlib import Path

from core.settings import DevStackSettings

CACHE_DIR_ENV = DevStackSettings.variable("cache_dir")


def cache_dir() -> Path:
    """Returns the cache root: ``$EVENTFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/eventflow``, else ``~/.cache/eventflow``."""
    return DevStackSettings.load().cache_root()
