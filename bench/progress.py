"""A dependency-free progress bar on stderr for long benchmark phases."""

from __future__ import annotations

import sys
import time


class Progress:
    """Redraws ``phase [#####.....] done/total`` at most ten times a second."""

    def __init__(self, phase: str, total: int, *, enabled: bool = True) -> None:
        self._phase = phase
        self._total = max(total, 1)
        self._enabled = enabled and sys.stderr.isatty()
        self._last_draw = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last_draw < 0.1 and done < self._total):
            return
        self._last_draw = now
        filled = int(30 * min(done, self._total) / self._total)
        sys.stderr.write(f"\r{self._phase:<28} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self._total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._enabled:
            sys.stderr.write("\n")


_STARTED = time.monotonic()


def phase(text: str) -> None:
    """Announces a phase on stderr with the seconds since start (always, so CI logs show where time went)."""
    sys.stderr.write(f"bench [{time.monotonic() - _STARTED:6.1f}s]: {text}\n")
    sys.stderr.flush()
