"""A single-node KRaft Kafka broker run from the cached Maven Central jars."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devstack import _process, provision
from devstack.errors import ServerStartError

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id (a UUID in URL-safe base64), never starting with ``-``.

    The storage tool reads ``-t`` with an argument parser that takes a value starting with ``-`` for
    an option ("expected one argument"): one id in 64 did, and failed the format. Kafka's own
    ``random-uuid`` draws again in that case, as this does.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaServer:
    """One combined broker+controller bound to 127.0.0.1.

    Attributes:
        home: folder for this broker's config, data, logs and pid file.
        port: client listener port; the controller listens on ``port + 1``.
        heap_megabytes: JVM heap bound.
        persistent: keep topics between runs; otherwise the data is wiped at each start, so a
            test stack never reopens the partitions of earlier sessions (thousands of them after a
            day of test runs slow the start and can exhaust the process's file descriptors).
    """

    home: Path
    port: int = 19092
    heap_megabytes: int = 512
    persistent: bool = True

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def _pid_path(self) -> Path:
        return self.home / "kafka.pid"

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        controller = f"127.0.0.1:{self.port + 1}"
        props = "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={controller}",
            f"listeners=PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            f"advertised.listeners=PLAINTEXT://{self.bootstrap_servers}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.home / 'data'}",
            "num.partitions=3",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=24",
            "",
        ])
        config = self.home / "server.properties"
        config.write_text(props)
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.home / "server.log"))
        return config

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        java = provision.require_tool("java", "run the Kafka broker")
        return [
            java, f"-Xmx{self.heap_megabytes}m", f"-Xms{min(self.heap_megabytes, 256)}m",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return _process.read_pid(self._pid_path)

    def is_running(self) -> bool:
        return _process.read_pid(self._pid_path) is not None

    def start(self, timeout_seconds: float = 90.0) -> None:
        """Formats storage on first use, starts the broker and waits for a metadata response."""
        if self.is_running():
            self.wait_ready(timeout_seconds)
            return
        libs = provision.kafka_libs()
        config = self._write_config()
        port_stamp = self.home / "formatted-for-port"
        if not self.persistent or (port_stamp.exists() and port_stamp.read_text() != str(self.port)):
            # A KRaft voter is recorded with its controller endpoint at format time; local data is disposable.
            shutil.rmtree(self.home / "data", ignore_errors=True)
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            with self.log_path.open("ab") as log:
                formatted = subprocess.run(
                    self._java(libs, "kafka.tools.StorageTool", "format", "--standalone",
                               "-t", cluster_id, "-c", str(config)),
                    stdout=log, stderr=subprocess.STDOUT, check=False,
                )
            if formatted.returncode != 0:
                raise ServerStartError("Kafka", str(self.log_path), "storage format failed")
            port_stamp.write_text(str(self.port))
        _process.start_detached(self._java(libs, "kafka.Kafka", str(config)), self.log_path, self._pid_path)
        self.wait_ready(timeout_seconds)

    def wait_ready(self, timeout_seconds: float) -> None:
        """Blocks until the broker answers a metadata request."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        deadline = time.monotonic() + timeout_seconds
        while True:
            if not self.is_running():
                raise ServerStartError("Kafka", str(self.log_path), "process exited")
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise ServerStartError("Kafka", str(self.log_path), f"no metadata after {timeout_seconds:.0f}s")
            time.sleep(0.5)

    def stop(self) -> bool:
        return _process.stop(self._pid_path)
