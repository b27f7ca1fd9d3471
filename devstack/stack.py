"""The local stack: one Kafka broker, one Temporal dev server and one PostgreSQL server, started and stopped together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.settings import DevStackSettings
from devstack.cache import cache_dir
from devstack.kafka import KafkaServer
from devstack.postgres import PostgresServer
from devstack.temporal import TemporalDevServer

#: Custom search attributes the journey workflows upsert; the dev server registers them at start.
SEARCH_ATTRIBUTES = {"CustomerId": "Keyword", "JourneyId": "Keyword", "JourneyVersion": "Int"}


@dataclass(frozen=True)
class Endpoints:
    """Where clients reach the servers; ``database_url`` is None for a stack without PostgreSQL."""

    kafka_bootstrap_servers: str
    temporal_address: str
    temporal_ui_url: str | None = None
    database_url: str | None = None


@dataclass(frozen=True)
class StackStatus:
    kafka_running: bool
    temporal_running: bool
    endpoints: Endpoints
    logs: tuple[Path, ...]
    #: None for a stack without PostgreSQL.
    postgres_running: bool | None = None


class Stack:
    """Kafka, Temporal and PostgreSQL under ``<cache>/<name>``; ports come from ``EVENTFLOW_DEV_*_PORT``.

    ``postgres=False`` leaves PostgreSQL out (a session that uses another server, or starts it on its own).
    """

    def __init__(self, name: str = "dev", *, kafka_port: int | None = None, temporal_port: int | None = None,
                 ui_port: int | None = None, postgres_port: int | None = None, ui: bool = True,
                 persistent: bool = True, postgres: bool = True) -> None:
        home = cache_dir() / name
        ports = DevStackSettings.load()
        self.kafka = KafkaServer(home / "kafka", port=kafka_port or ports.kafka_port, persistent=persistent)
        self.temporal = TemporalDevServer(
            home / "temporal",
            port=temporal_port or ports.temporal_port,
            ui_port=(ui_port or ports.temporal_ui_port) if ui else None,
            search_attributes=SEARCH_ATTRIBUTES,
            persistent=persistent,
        )
        self.postgres = PostgresServer(home / "postgres", port=postgres_port or ports.postgres_port,
                                       persistent=persistent) if postgres else None

    @classmethod
    def for_tests(cls, *, postgres: bool = True) -> Stack:
        """The test suite's own stack: other ports than `eventflow dev`, no UI, no state kept between sessions."""
        return cls("test", kafka_port=29092, temporal_port=17233, postgres_port=25432, ui=False, persistent=False,
                   postgres=postgres)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.kafka.bootstrap_servers, self.temporal.address, self.temporal.ui_url,
                         self.postgres.url if self.postgres else None)

    def is_running(self) -> bool:
        return (self.kafka.is_running() and self.temporal.is_running()
                and (self.postgres is None or self.postgres.is_running()))

    def up(self) -> Endpoints:
        """Starts whichever server is not running and waits until each serves."""
        self.temporal.start()
        if self.postgres:
            self.postgres.start()
        self.kafka.start()
        return self.endpoints

    def down(self) -> None:
        self.kafka.stop()
        self.temporal.stop()
        if self.postgres:
            self.postgres.stop()

    def status(self) -> StackStatus:
        return StackStatus(
            kafka_running=self.kafka.is_running(),
            temporal_running=self.temporal.is_running(),
            endpoints=self.endpoints,
            logs=(self.kafka.log_path, self.temporal.log_path, *((self.postgres.log_path,) if self.postgres else ())),
            postgres_running=self.postgres.is_running() if self.postgres else None,
        )
