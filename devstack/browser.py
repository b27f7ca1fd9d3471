"""The headless browser the preference-page tests drive: Chromium from the OS packages.

Playwright (a test dependency) is pointed at ``/usr/bin/chromium`` and never downloads browsers of
its own. Where Chromium is missing and apt-get is available (Debian and Ubuntu CI images, which
run as root), ``eventflow dev provision`` installs the ``chromium`` package; elsewhere it says how.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devstack.cache import cache_dir
from devstack.errors import MissingToolError
from devstack.provision import _run_logged

CHROMIUM = Path("/usr/bin/chromium")
_HINT = "install Chromium from your OS packages (Debian: apt-get install -y chromium)"


def chromium(executable: Path = CHROMIUM, *, apt_get: str | None = None, root: bool | None = None) -> Path:
    """The Chromium executable, installed with apt-get first when it is missing and apt-get can.

    Raises:
        MissingToolError: Chromium is missing and cannot be installed here (no apt-get, or not root).
        ProvisionError: apt-get failed (its output is in the log named).
    """
    if executable.exists():
        return executable
    apt = apt_get if apt_get is not None else shutil.which("apt-get")
    is_root = root if root is not None else os.geteuid() == 0
    if apt is None or not is_root:
        raise MissingToolError("chromium", "run the preference page's browser tests", _HINT)
    log = cache_dir() / "logs" / "chromium-install.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run_logged([apt, "update"], log.with_name("chromium-apt-update.log"), "apt-get update", env=env)
    _run_logged([apt, "install", "-y", "--no-install-recommends", "chromium"], log, "apt-get install chromium",
                env=env)
    if not executable.exists():
        raise MissingToolError("chromium", "run the preference page's browser tests", _HINT)
    return executable
