"""Start-up checks of the consumer's dependencies, each failing with one line that says what and where.

Without them an unreachable Temporal ended the process with a raw ``RuntimeError`` traceback, and
an unreachable Kafka or registry only showed later, as retries. Each check raises
`DependencyUnavailableError`, which the command line prints as ``eventflow: ...`` (exit code 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryError

from eventflow.errors import EventflowError
from events.errors import RegistryUnavailableError
from events.registry import RegistrySettings, call_registry, connect as connect_registry

T = TypeVar("T")


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def check_kafka(client_config: Mapping[str, str], *, timeout_seconds: float = 10.0) -> None:
    """Asks the cluster for its metadata; blocking."""
    # log_level 0 keeps librdkafka's own connection-refused lines off stderr: the error says it once.
    admin = AdminClient({**client_config, "log_level": 0})
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


__all__ = ["DependencyUnavailableError", "check_dependencies", "check_kafka", "check_registry",
           "connect_temporal"]
