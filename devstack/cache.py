"""Where provisioned servers, their data and their logs live: outside any working tree."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "EVENTFLOW_CACHE_DIR"


def cache_dir() -> Path:
    """Returns the cache root: ``$EVENTFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/eventflow``, else ``~/.cache/eventflow``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "eventflow"
