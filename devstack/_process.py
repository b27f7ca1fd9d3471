"""Detached server processes tracked by pid files, so `dev up` and `dev down` can be separate commands."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_detached(argv: list[str], log_path: Path, pid_path: Path, env: dict[str, str] | None = None) -> int:
    """Starts ``argv`` in its own session, appending output to ``log_path``; returns the pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    pid_path.write_text(str(proc.pid))
    return proc.pid


def read_pid(pid_path: Path) -> int | None:
    """Returns the pid recorded in ``pid_path`` if that process is still alive."""
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    if fields[0] == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return True
    return False


def stop(pid_path: Path, timeout_seconds: float = 20.0) -> bool:
    """Sends SIGTERM to the recorded process group, then SIGKILL after the timeout; True if one ran."""
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and read_pid(pid_path) is not None:
        time.sleep(0.1)
    if read_pid(pid_path) is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pid_path.unlink(missing_ok=True)
    return True
