"""Idempotent provisioning of the Mermaid CLI (``mmdc``) that the tests render journey diagrams with.

``mmdc`` is an npm package that drives a headless Chromium through puppeteer. Puppeteer's own
browser download is not reachable from these machines, so the package is installed with
``PUPPETEER_SKIP_DOWNLOAD=1`` and ``--ignore-scripts`` from the hash-locked ``devstack/mermaid``
lock file (``npm ci``), and pointed at Debian's ``chromium`` (installed with apt-get when it is
missing and this process may). The result is a wrapper script in the cache,
``<cache>/mermaid-cli-<version>/mmdc``, stamped with the lock file's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from devstack.cache import cache_dir
from devstack.errors import MissingToolError
from devstack.provision import _run_logged, require_tool
from devstack.tools import _exclusive

MERMAID_CLI_VERSION = "11.17.0"
_PACKAGE_DIR = Path(__file__).parent / "mermaid"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _home() -> Path:
    return cache_dir() / f"mermaid-cli-{MERMAID_CLI_VERSION}"


def _lock_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((_PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()


def installed_mermaid_cli() -> Path | None:
    """The provisioned ``mmdc`` wrapper, or None when `mermaid_cli` has not run (it installs nothing)."""
    wrapper = _home() / "mmdc"
    stamp = _home() / ".complete"
    if wrapper.exists() and stamp.exists() and stamp.read_text().strip() == _lock_hash():
        return wrapper
    return None


def _chromium() -> str:
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise MissingToolError("chromium", "render Mermaid diagrams in tests",
                               "install it (Debian: apt-get install -y chromium)")
    logs = cache_dir() / "logs"
    _run_logged([apt, "update"], logs / "provision-apt-update.log", "the apt package lists (for chromium)")
    _run_logged([apt, "install", "-y", "--no-install-recommends", "chromium"], logs / "provision-chromium.log",
                "Debian's chromium")
    found = shutil.which("chromium")
    if found is None:
        raise MissingToolError("chromium", "render Mermaid diagrams in tests", "apt-get installed no chromium binary")
    return found


def mermaid_cli() -> Path:
    """Installs the pinned Mermaid CLI once and returns its ``mmdc`` wrapper."""
    installed = installed_mermaid_cli()
    if installed is not None:
        return installed
    npm = require_tool("npm", "install the Mermaid CLI from the npm registry")
    home = _home()
    with _exclusive(cache_dir() / "build" / "mermaid-cli.lock"):
        installed = installed_mermaid_cli()
        if installed is not None:
            return installed
        chromium = _chromium()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(_PACKAGE_DIR / name, home / name)
        _run_logged([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(home)],
                    cache_dir() / "logs" / "provision-mermaid-cli.log", "the Mermaid CLI",
                    env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"})
        # Chromium's sandbox needs user namespaces that containers (and root) often lack.
        config = home / "puppeteer.json"
        config.write_text(json.dumps({"executablePath": chromium, "args": ["--no-sandbox", "--disable-gpu"]}))
        wrapper = home / "mmdc"
        wrapper.write_text(f'#!/bin/sh\nexec "{home}/node_modules/.bin/mmdc" -p "{config}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (home / ".complete").write_text(_lock_hash())
    return wrapper
