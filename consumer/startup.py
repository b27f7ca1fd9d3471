"""Start-up checks of the consumer's dependencies, each failing with one line that says what and where.

Without them an unreachable Temporal ended the process with a raw ``RuntimeError`` traceback, and
an unreachable Kafka or registry only showed later, as retries. A dependency that is down at start
is waited for up to `STARTUP_DEADLINE_SECONDS` (logging each attempt; the ops server already
answers liveness and, not ready, readiness), so a rolling restart during a short broker blip does
not crash-loop; after that `DependencyUnavailableError` ends the process, which the command line
prints as one ``eventflow: ...`` line (exit code 2).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryError

from core.errors import ConfigError, EventflowError
from core.settings import LIBRDKAFKA_PREFIX, librdkafka_variable
from events.errors import RegistryUnavailableError
from events.registry import RegistrySettings, call_registry
from events.registry import connect as connect_registry

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: How long start-up waits for an unreachable dependency before giving up with one line.
STARTUP_DEADLINE_SECONDS = 30.0


class DependencyUnavailableError(EventflowError):
    """A dependency could not be reached at start-up.

    Attributes:
        dependency: ``Kafka``, ``Temporal`` or ``the schema registry``.
        address: where it was looked for.
        cause: the client's own message, first line only.
    """

    def __init__(self, dependency: str, address: str, cause: str) -> None:
        super().__init__(f"cannot start: {dependency} at {address} is unreachable: {cause}")
        self.dependency = dependency
        self.address = address
        self.cause = cause


class KafkaSettingsError(ConfigError):
    """librdkafka refused the client settings (``EVENTFLOW_LIBRDKAFKA_*``); the variable is named when the
    message names a property."""

    def __init__(self, message: str) -> None:
        named = re.search(r"([a-z]+(?:\.[a-z]+)+) failed", message)
        super().__init__(librdkafka_variable(named.group(1)) if named else f"{LIBRDKAFKA_PREFIX}*",
                         f"librdkafka refused the Kafka client settings: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def check_kafka(client_config: Mapping[str, str], *, timeout_seconds: float = 10.0) -> None:
    """Asks the cluster for its metadata; blocking."""
    # log_level 0 keeps librdkafka's own connection-refused lines off stderr: the error says it once.
    try:
        admin = AdminClient({**client_config, "log_level": 0})
    except KafkaException as exc:
        # The client could not even be created: a setting librdkafka refuses, not an outage to wait out.
        error = exc.args[0] if exc.args else None
        raise KafkaSettingsError(error.str() if isinstance(error, KafkaError) else _first_line(exc)) from exc
    try:
        admin.list_topics(timeout=timeout_seconds)
    except KafkaException as exc:
        raise DependencyUnavailableError("Kafka", client_config.get("bootstrap.servers", "?"),
                                         _first_line(exc)) from exc


def check_registry(settings: RegistrySettings) -> None:
    """Asks the registry for its subjects; blocking."""
    client = connect_registry(settings)
    try:
        call_registry("list subjects", client.get_subjects)
    except (RegistryUnavailableError, SchemaRegistryError) as exc:
        raise DependencyUnavailableError("the schema registry", settings.url, _first_line(exc)) from exc


async def connect_temporal(address: str, connect: Callable[[], Awaitable[T]], *,
                           timeout_seconds: float = 20.0) -> T:
    """``await connect()``, with a failure or timeout as `DependencyUnavailableError`."""
    try:
        return await asyncio.wait_for(connect(), timeout_seconds)
    except TimeoutError as exc:
        raise DependencyUnavailableError("Temporal", address, f"no answer within {timeout_seconds:.0f}s") from exc
    except Exception as exc:  # the SDK raises a bare RuntimeError for a refused or failed connection
        raise DependencyUnavailableError("Temporal", address, _first_line(exc)) from exc


async def check_dependencies(client_config: Mapping[str, str], registry: RegistrySettings | None) -> None:
    """Kafka, then the registry if one is configured; Temporal is checked by `connect_temporal`."""
    await asyncio.to_thread(check_kafka, client_config)
    if registry is not None:
        await asyncio.to_thread(check_registry, registry)


class StartupStopped(Exception):
    """The process was asked to stop while it was still waiting for a dependency."""


async def wait_for_dependency(attempt: Callable[[], Awaitable[T]], *, stop: asyncio.Event | None = None,
                              deadline_seconds: float = STARTUP_DEADLINE_SECONDS,
                              interval_seconds: float = 2.0) -> T:
    """``await attempt()`` until it does not raise `DependencyUnavailableError` or the deadline passes.

    Raises:
        DependencyUnavailableError: the last failure, once the deadline has passed.
        StartupStopped: ``stop`` was set while waiting.
    """
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return await attempt()
        except DependencyUnavailableError as exc:
            if time.monotonic() + interval_seconds >= deadline:
                raise
            log.warning("dependency_unavailable_waiting", dependency=exc.dependency, address=exc.address,
                        error=exc.cause, gives_up_in_seconds=round(deadline - time.monotonic()))
        if stop is None:
            await asyncio.sleep(interval_seconds)
            continue
        try:
            await asyncio.wait_for(stop.wait(), interval_seconds)
        except TimeoutError:
            continue
        raise StartupStopped()


__all__ = ["STARTUP_DEADLINE_SECONDS", "StartupStopped", "wait_for_dependency", "DependencyUnavailableError", "check_dependencies", "check_kafka", "check_registry",
           "connect_temporal"]
