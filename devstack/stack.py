"""The local stack: one Kafka broker and one Temporal dev server, started and stopped together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devstack.cache import cache_dir
from core.settings import DevStackSettings
from devstack.kafka import KafkaServer
from devstack.temporal import TemporalDevServer

#: Custom search attributes the journey workflows upsert; the dev server registers them at start.
SEARCH_ATTRIBUTES = {"CustomerId": "Keyword", "JourneyId": "Keyword", "JourneyVersion": "Int"}


@dataclass(frozen=True)
class Endpoints:
    """Where clients reach the servers."""

    kafka_bootstrap_servers: str
    temporal_address: str
    temporal_ui_url: str | None = None


@dataclass(frozen=True)
class StackStatus:
    kafka_running: bool
    temporal_running: bool
    endpoints: Endpoints
    logs: tuple[Path, ...]


class Stack:
    """Kafka plus Temporal under ``<cache>/<name>``; ports come from ``EVENTFLOW_DEV_*_PORT``."""

    def __init__(self, name: str = "dev", *, kafka_port: int | None = None, temporal_port: int | None = None,
                 ui_port: int | None = None, ui: bool = True, persistent: bool = True) -> None:
        home = cache_dir() / name
        ports = DevStackSettings.load()
        self.kafka = KafkaServer(home / "kafka", port=kafka_port or ports.kafka_port)
        self.temporal = TemporalDevServer(
            home / "temporal",
            port=temporal_port or ports.temporal_port,
            ui_port=(ui_port or ports.temporal_ui_port) if ui else None,
            search_attributes=SEARCH_ATTRIBUTES,
            persistent=persistent,
        )

    @classmethod
    def for_tests(cls) -> Stack:
        """The test suite's own stack: other ports than `eventflow dev`, no UI, Temporal state in memory."""
        return cls("test", kafka_port=29092, temporal_port=17233, ui=False, persistent=False)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.kafka.bootstrap_servers, self.temporal.address, self.temporal.ui_url)

    def is_running(self) -> bool:
        return self.kafka.is_running() and self.temporal.is_running()

    def up(self) -> Endpoints:
        """Starts whichever server is not running and waits until both serve."""
        self.temporal.start()
        self.kafka.start()
        return self.endpoints

    def down(self) -> None:
        self.kafka.stop()
        self.temporal.stop()

    def status(self) -> StackStatus:
        return StackStatus(
            kafka_running=self.kafka.is_running(),
            temporal_running=self.temporal.is_running(),
            endpoints=self.endpoints,
            logs=(self.kafka.log_path, self.temporal.log_path),
        )
