"""Detached server processes tracked by pid files, so `dev up` and `dev down` can be separate commands."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account a root process starts a server as.

    Attributes:
        name: the user name (for messages).
        uid: its user id.
        gid: its primary group id.
    """

    name: str
    uid: int
    gid: int


def start_detached(argv: list[str], log_path: Path, pid_path: Path, env: dict[str, str] | None = None, *,
                   run_as: RunAs | None = None, cwd: Path | None = None) -> int:
    """Starts ``argv`` in its own session, appending output to ``log_path``; returns the pid.

    ``run_as`` (only when this process is root) starts it as that user, without root's groups.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
            # An empty extra_groups drops root's supplementary groups too, not only its uid and gid.
            user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    pid_path.write_text(str(proc.pid))
    return proc.pid


def run_logged(argv: list[str], log_path: Path, env: dict[str, str] | None = None, *, run_as: RunAs | None = None,
               cwd: Path | None = None) -> int:
    """Runs ``argv`` to completion (as ``run_as`` when given), appending output to ``log_path``; returns its status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        done = subprocess.run(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd, check=False,
            user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    return done.returncode


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


def stop(pid_path: Path, timeout_seconds: float = 20.0, *, first_signal: signal.Signals = signal.SIGTERM,
         whole_group: bool = True) -> bool:
    """Sends ``first_signal`` to the recorded process (group), then SIGKILL to the group after the timeout.

    Returns:
        True if a process was running.
    """
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    try:
        if whole_group:
            os.killpg(pid, first_signal)
        else:
            os.kill(pid, first_signal)
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
