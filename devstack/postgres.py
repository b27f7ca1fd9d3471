"""A local PostgreSQL server for the customer store, run from the PostgreSQL build on Maven Central.

The relocatable distribution is unpacked once into the cache (`provision.postgres_distribution`).
Each server has its own data folder, initialised on first start with one superuser role and one
database, both ``eventflow`` (password ``eventflow``, checked with SCRAM), and listens on 127.0.0.1
only, with no Unix socket (whose path length limit a deep cache folder would break).

PostgreSQL refuses to run as root. A root process (CI runs as root) runs it as the system user
``eventflow-pg`` instead, creating that user once. That user cannot enter root's home, where the
cache usually is, so for root the binaries are copied to and the data folders kept under
``/var/lib/eventflow-pg``; the pid file and the log stay in the server's ``home``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from core.settings import dev_database_url
from devstack import _process, provision
from devstack.cache import cache_dir
from devstack.errors import ProvisionError, ServerStartError
from devstack.tools import _exclusive

#: The unprivileged account a root process runs PostgreSQL as.
SERVER_USER = "eventflow-pg"
#: Where a root process keeps the binaries and data folders, outside root's own (closed) home.
ROOT_RUNTIME_DIR = Path("/var/lib/eventflow-pg")

_MAJOR = provision.POSTGRES_VERSION.split(".")[0]
_CONNECT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class PostgresServer:
    """One PostgreSQL postmaster bound to 127.0.0.1.

    Attributes:
        home: folder for this server's log and pid file (and its data, unless run by root).
        port: TCP port.
        persistent: keep the data between runs; otherwise it is wiped at start and at stop, and
            the server skips fsync (nothing in it has to survive a crash).
    """

    home: Path
    port: int = 15432
    persistent: bool = True

    @property
    def url(self) -> str:
        """The DSN of the ``eventflow`` database: ``postgresql://eventflow:eventflow@127.0.0.1:PORT/eventflow``."""
        return dev_database_url(self.port)

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def _pid_path(self) -> Path:
        return self.home / "postgres.pid"

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder: under ``home``, or under `ROOT_RUNTIME_DIR` when run by root."""
        if os.geteuid() != 0:
            return self.home / "data"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return ROOT_RUNTIME_DIR / "servers" / f"{self.home.parent.name}-{digest}" / "data"

    @property
    def _initialised_stamp(self) -> Path:
        # Beside the data folder, not in it: a folder that initdb left half-written has no stamp.
        return self.data_dir.with_name("data.initialised")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return _process.read_pid(self._pid_path)

    def is_running(self) -> bool:
        return _process.read_pid(self._pid_path) is not None

    def start(self, timeout_seconds: float = 60.0, *, keep_data: bool = False) -> None:
        """Initialises the data folder on first use, starts the server and waits until it accepts connections.

        Blocks (it runs its own event loop for the readiness checks): from async code, call it through
        `asyncio.to_thread`.

        Args:
            keep_data: start a non-persistent server on the data its last ``stop(keep_data=True)`` left
                (an outage the caller stages), instead of fresh data.
        """
        if not self.is_running():
            run_as = _server_account()
            binaries = _binaries(run_as)
            self.home.mkdir(parents=True, exist_ok=True)
            if not self.persistent and not keep_data:
                self._discard_data()
            if not self._initialised_stamp.exists():
                self._initdb(binaries, run_as)
            self._check_major_version()
            argv = [str(binaries / "bin" / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
            if not self.persistent:
                argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            _process.start_detached(argv, self.log_path, self._pid_path, _server_env(), run_as=run_as,
                                    cwd=self.data_dir.parent)
        self.wait_ready(timeout_seconds)
        asyncio.run(_ensure_database(self.url))

    def wait_ready(self, timeout_seconds: float) -> None:
        """Blocks until the server accepts an authenticated connection."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if not self.is_running():
                raise ServerStartError("PostgreSQL", str(self.log_path), "process exited")
            if asyncio.run(_accepts_connections(_maintenance_url(self.url))):
                return
            if time.monotonic() > deadline:
                raise ServerStartError("PostgreSQL", str(self.log_path),
                                       f"no connection accepted after {timeout_seconds:.0f}s")
            time.sleep(0.2)

    def stop(self, timeout_seconds: float = 30.0, *, keep_data: bool = False) -> bool:
        """Fast shutdown (SIGINT to the postmaster: clients are disconnected, then a clean exit).

        Args:
            keep_data: keep a non-persistent server's data for a ``start(keep_data=True)``; the fast
                shutdown writes a checkpoint, so even without fsync nothing committed is lost.

        Returns:
            True if the server was running.
        """
        # SIGTERM would be a "smart" shutdown that waits for every client to disconnect first.
        stopped = _process.stop(self._pid_path, timeout_seconds, first_signal=signal.SIGINT, whole_group=False)
        if not self.persistent and not keep_data:
            self._discard_data()
        return stopped

    def _initdb(self, binaries: Path, run_as: _process.RunAs | None) -> None:
        data = self.data_dir
        shutil.rmtree(data, ignore_errors=True)
        data.parent.mkdir(parents=True, exist_ok=True)
        data.mkdir(mode=0o700)
        if run_as is not None:
            for folder in (data.parent.parent, data.parent):
                folder.chmod(0o755)  # whatever root's umask: the server user must traverse them
        dsn = urlsplit(self.url)
        password_file = data.with_name("initdb.password")
        password_file.write_text(f"{dsn.password}\n")
        password_file.chmod(0o600)
        if run_as is not None:
            os.chown(data, run_as.uid, run_as.gid)
            os.chown(password_file, run_as.uid, run_as.gid)
        argv = [str(binaries / "bin" / "initdb"), "-D", str(data), f"--username={dsn.username}",
                f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]
        if not self.persistent:
            argv.append("--no-sync")
        try:
            status = _process.run_logged(argv, self.log_path, _server_env(), run_as=run_as, cwd=data.parent)
        finally:
            password_file.unlink(missing_ok=True)
        if status != 0:
            raise ServerStartError("PostgreSQL", str(self.log_path), f"initdb exited with {status}")
        self._initialised_stamp.write_text(provision.POSTGRES_VERSION)

    def _check_major_version(self) -> None:
        found = (self.data_dir / "PG_VERSION").read_text().strip()
        if found != _MAJOR:
            raise ServerStartError("PostgreSQL", str(self.log_path),
                                   f"{self.data_dir} holds PostgreSQL {found} data and this is PostgreSQL {_MAJOR}; "
                                   "dump and restore it, or remove the folder to start empty")

    def discard_data(self) -> None:
        """Removes the (stopped) server's data: for a persistent server a test owns."""
        self._discard_data()

    def _discard_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._initialised_stamp.unlink(missing_ok=True)
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):  # the server's own folder under ROOT_RUNTIME_DIR, once empty
                self.data_dir.parent.rmdir()


def _server_env() -> dict[str, str]:
    """A small, fixed environment: no secrets of the caller reach another account, and the same locale everywhere."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "TZ": "UTC"}


def _server_account() -> _process.RunAs | None:
    """None when not root; else the unprivileged `SERVER_USER`, created (once) as a system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return _process.RunAs(SERVER_USER, entry.pw_uid, entry.pw_gid)


def _create_server_user() -> pwd.struct_passwd:
    useradd = provision.require_tool("useradd", f"create the system user {SERVER_USER} that runs PostgreSQL as root")
    nologin = next((shell for shell in ("/usr/sbin/nologin", "/sbin/nologin") if Path(shell).exists()), "/bin/false")
    log_path = cache_dir() / "logs" / "provision-postgres-user.log"
    with _exclusive(cache_dir() / "build" / "postgres-user.lock"):
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            pass
        _process.run_logged([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                             "--shell", nologin, SERVER_USER], log_path)
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ProvisionError(f"the system user {SERVER_USER}", str(log_path)) from None


def _binaries(run_as: _process.RunAs | None) -> Path:
    """The unpacked distribution; for root, a copy under `ROOT_RUNTIME_DIR` that ``run_as`` can read."""
    dist = provision.postgres_distribution()
    if run_as is None:
        return dist
    copy = ROOT_RUNTIME_DIR / f"postgres-{provision.POSTGRES_VERSION}"
    stamp = copy / ".complete"
    if stamp.exists() and stamp.read_text().strip() == provision.POSTGRES_VERSION:
        return copy
    ROOT_RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
    ROOT_RUNTIME_DIR.chmod(0o755)  # whatever the umask: the server user must traverse it
    staging = ROOT_RUNTIME_DIR / f"{copy.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    # Root-owned and read-only to the server user: the server cannot change its own binaries.
    shutil.copytree(dist, staging, symlinks=True)
    if stamp.exists():  # another process finished its copy first
        shutil.rmtree(staging, ignore_errors=True)
        return copy
    shutil.rmtree(copy, ignore_errors=True)
    staging.rename(copy)
    return copy


def _maintenance_url(url: str) -> str:
    """The same server's ``postgres`` database, which exists from initdb on."""
    return urlsplit(url)._replace(path="/postgres").geturl()


async def _accepts_connections(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=_CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
        return False  # not listening yet, or still starting up; the caller bounds the wait
    await connection.close()
    return True


async def _ensure_database(url: str) -> None:
    """Creates the DSN's database if it is missing (first start, or dropped by hand)."""
    name = urlsplit(url).path.lstrip("/")
    connection = await asyncpg.connect(_maintenance_url(url), timeout=_CONNECT_TIMEOUT_SECONDS)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # a concurrent start created it
    finally:
        await connection.close()
