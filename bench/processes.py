"""The processes a benchmark phase runs and watches: ``eventflow consume``/``worker`` as deployed.

Eventflow runs as its public command in its own OS process, configured only through environment
variables, so the benchmark measures whatever the tree's send path is, not an in-process copy of
it. Counters come from each process's ``/metrics``; CPU time and RSS from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.progress import phase
from eventflow import settings

ROOT = Path(__file__).resolve().parent.parent
BENCH_JOURNEYS = Path(__file__).resolve().parent / "journeys"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free port whose successor is free too (the Kafka broker's controller listens on port + 1)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def declared_settings() -> frozenset[str]:
    """Every environment variable some Eventflow process reads (any of them is accepted by all)."""
    return settings.variables()


#: Settings only ``eventflow worker`` reads (its channels, SDK metrics and send defaults): kept out
#: of ``eventflow consume``'s environment so each process gets what it reads.
WORKER_ONLY = settings.variables(settings.Process.WORKER) - settings.variables(settings.Process.CONSUMER)


@dataclass(frozen=True)
class EventflowEnv:
    """What one phase's Eventflow processes are pointed at.

    Attributes:
        kafka_bootstrap: Kafka bootstrap servers.
        temporal_address: Temporal frontend host:port.
        topics: topics the consumer reads.
        group: its consumer group.
        task_queue: the journeys' task queue (consumer starts, worker polls).
        workdir: where logs and the (unused) outbox go.
        sendgrid_url: base URL of the provider stub; None leaves email on the outbox.
        max_in_flight: the consumer's in-flight bound.
        database_url: the customer store both processes use (None: the workflow store).
    """

    kafka_bootstrap: str
    temporal_address: str
    topics: tuple[str, ...]
    group: str
    task_queue: str
    workdir: Path
    sendgrid_url: str | None = None
    max_in_flight: int = 512
    extra: Mapping[str, str] = field(default_factory=dict)
    database_url: str | None = None

    def environ(self, command: str, metrics_port: int) -> tuple[dict[str, str], list[str]]:
        """The environment of ``eventflow <command>``, and the wanted settings it does not declare (dropped)."""
        wanted = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "EVENTFLOW_TOPICS": ",".join(self.topics),
            "EVENTFLOW_CONSUMER_GROUP": self.group,
            "EVENTFLOW_DLQ_TOPIC": f"{self.topics[0]}.dlq",
            "EVENTFLOW_TASK_QUEUE": self.task_queue,
            "EVENTFLOW_MAX_IN_FLIGHT": str(self.max_in_flight),
            "EVENTFLOW_METRICS_PORT": str(metrics_port),
            "EVENTFLOW_TEMPORAL_METRICS_PORT": "0",
            "EVENTFLOW_LOG_FORMAT": "json",
            "EVENTFLOW_JOURNEYS_DIR": str(BENCH_JOURNEYS),
            "EVENTFLOW_OUTBOX_PATH": str(self.workdir / f"outbox-{self.task_queue}.jsonl"),
            "EVENTFLOW_CACHE_DIR": str(self.workdir / "cache"),
        }
        if self.database_url is not None:
            wanted["EVENTFLOW_DATABASE_URL"] = self.database_url
        if self.sendgrid_url is not None:
            wanted.update({
                "EVENTFLOW_EMAIL_PROVIDER": "sendgrid",
                "SENDGRID_API_KEY": "SG.bench",
                "EVENTFLOW_EMAIL_FROM": "bench@example.com",
                "EVENTFLOW_SENDGRID_BASE_URL": self.sendgrid_url,
                # The per-worker token bucket models the provider's limit, not Eventflow's capacity.
                "EVENTFLOW_SENDGRID_RATE_PER_SECOND": "100000",
                "EVENTFLOW_SENDGRID_BURST": "100000",
            })
        wanted.update(self.extra)
        if command != "worker":
            wanted = {k: v for k, v in wanted.items() if k not in WORKER_ONLY}
        declared = declared_settings()
        env = {k: v for k, v in os.environ.items() if k not in declared and not k.startswith("EVENTFLOW_")}
        env.update({k: v for k, v in wanted.items() if k in declared})
        return env, sorted(k for k in wanted if k not in declared)


class EventflowProcess:
    """One ``eventflow <command>`` OS process with its own ``/metrics`` port and log file."""

    def __init__(self, command: str, env: EventflowEnv, name: str) -> None:
        self.command = command
        self.name = name
        self.metrics_port = free_port()
        self._env, self.dropped_settings = env.environ(command, self.metrics_port)
        self._log_path = env.workdir / f"{name}-{env.group}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> None:
        for setting in self.dropped_settings:
            phase(f"warning: {setting} is not a setting of this tree; {self.name} runs without it")
        log = self._log_path.open("ab")
        self._process = subprocess.Popen([sys.executable, "-m", "eventflow.cli", self.command], cwd=ROOT,
                                         env=self._env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def running_pid(self) -> int | None:
        """The pid while the process runs (a restart changes it), else None."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a node loss would end it: no drain, nothing flushed."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), ""
        except OSError:
            return 0, ""

    async def wait_ready(self, timeout_seconds: float = 90.0) -> None:
        """Waits until ``/readyz`` answers 200; raises with the log tail when the process died."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            status, _ = await asyncio.to_thread(self._get, "/readyz")
            if status == 200:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout_seconds}s:\n{self.log_tail()}")

    async def counter(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples matching ``labels`` (0 when absent or unreachable)."""
        return sum_samples(await self.metrics(), name, **labels)

    async def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of ``/metrics``: (name, labels, value)."""
        status, text = await asyncio.to_thread(self._get, "/metrics")
        if status != 200:
            return []
        return [(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text) for s in family.samples]

    async def stop(self, timeout_seconds: float = 30.0) -> None:
        """SIGTERM (the process drains), then SIGKILL after ``timeout_seconds``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10)


def sum_samples(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(value for sample_name, sample_labels, value in samples
               if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()))


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone).

    With ``tree``, also of its live children and of the children it has reaped (PostgreSQL serves
    each connection from a child process of the postmaster).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if tree:
        ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(child, tree=True) for child in _children(pid))
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


#: Processes measured with their children (a PostgreSQL server is a postmaster and its backends).
PROCESS_TREES = frozenset({"postgresql server"})


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_memory_by_process(pid: int) -> dict[int, tuple[float, float]]:
    """Each process of a tree (pid -> MiB): its proportional set size and the part of it that is
    shared memory (``Pss_Shmem``).

    PSS, not RSS: PostgreSQL's backends map the same shared buffers, which a sum of RSS would count
    once per backend; PSS splits each shared page among the processes mapping it. Falls back to RSS
    where ``smaps_rollup`` cannot be read.

    PostgreSQL's shared memory is its buffer cache, a segment of fixed size (``shared_buffers``)
    whose pages count as they are first touched: it fills towards that size under any load and is
    no leak. What the processes themselves hold is the difference.
    """
    found: dict[int, tuple[float, float]] = {}
    for member in [pid, *_descendants(pid)]:
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
            fields = {key: value for key, _, value in (line.partition(":") for line in lines) if key.isidentifier()}
            found[member] = (int(fields["Pss"].split()[0]) / 1024, int(fields.get("Pss_Shmem", "0 kB").split()[0]) / 1024)
        except (OSError, KeyError, IndexError, ValueError):
            found[member] = (rss_mib(member), 0.0)
    return found


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


#: A process's pid now (None while it is not running): a callable follows restarts.
PidSource = int | Callable[[], int | None]


class CpuMeter:
    """CPU each process used over one phase, in cores (1.0 = one core busy for the whole phase).

    A process that is killed and restarted during the phase is several pids over it: ``sample()``
    (called now and then, and just before a kill) keeps each pid's last reading, and a pid first
    seen after the meter started counts from zero (it was started within the phase).
    """

    def __init__(self, pids: Mapping[str, PidSource]) -> None:
        self._sources = dict(pids)
        self._readings: dict[str, dict[int, list[float]]] = {name: {} for name in self._sources}
        self._started_at = time.monotonic()
        self._sample(first=True)

    def _pid(self, name: str) -> int | None:
        source = self._sources[name]
        return source if isinstance(source, int) else source()

    def _sample(self, *, first: bool) -> None:
        for name in self._sources:
            pid = self._pid(name)
            if pid is None:
                continue
            used = cpu_seconds(pid, tree=name in PROCESS_TREES)
            if used <= 0:
                continue  # gone between the pid and the reading: its last reading stands
            reading = self._readings[name].setdefault(pid, [used if first else 0.0, used])
            reading[1] = max(reading[1], used)

    def sample(self) -> None:
        """Reads every process's CPU time now (call before killing one)."""
        self._sample(first=False)

    def cores(self) -> dict[str, float]:
        self.sample()
        elapsed = max(time.monotonic() - self._started_at, 1e-6)
        return {name: round(sum(last - first for first, last in readings.values()) / elapsed, 2)
                for name, readings in self._readings.items()}
