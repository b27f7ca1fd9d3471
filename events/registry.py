"""Schema Registry access: client settings, subject naming, and the cached writer-schema lookup.

Any Confluent-compatible registry works (Confluent, Apicurio's ``/apis/ccompat/v7``, Karapace):
only the subset of its REST API that ``confluent_kafka.schema_registry`` uses is needed. Failures
are split the way the consumer needs them: an id the registry does not know is the record's fault
(`UnknownSchemaError`, dead-lettered); a registry that cannot answer is not
(`RegistryUnavailableError`, retried).
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, get_args

import httpx
import structlog

with warnings.catch_warnings(record=True) as _import_warnings:
    # authlib (a dependency of the registry client) warns about its own httpx integration on import,
    # with an "always" filter of its own; the events package imports the client here first, so
    # every command would print it. Other warnings are passed on.
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
for _warning in _import_warnings:
    if "httpx module is deprecated" not in str(_warning.message):
        warnings.warn_explicit(_warning.message, _warning.category, _warning.filename, _warning.lineno)
from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from core.settings import SchemaRegistrySettings, SubjectStrategy
from events.errors import RegistryUnavailableError, SchemaResolutionError, UnknownSchemaError
from events.schemas import ENVELOPE, ParsedSchema

T = TypeVar("T")
log = structlog.get_logger(__name__)
SUBJECT_STRATEGIES: tuple[SubjectStrategy, ...] = get_args(SubjectStrategy)


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach the Schema Registry.

    Attributes:
        url: base URL of a Confluent-compatible API.
        username, password: HTTP basic auth, both or neither.
        timeout_seconds: per request.
        subject_strategy: how subjects are named when registering and looking up.
    """

    url: str
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 10.0
    subject_strategy: SubjectStrategy = "topic"

    def client_config(self) -> dict[str, object]:
        """The `SchemaRegistryClient` configuration."""
        config: dict[str, object] = {"url": self.url, "timeout": self.timeout_seconds}
        if self.username is not None:
            config["basic.auth.user.info"] = f"{self.username}:{self.password or ''}"
        return config


def registry_settings(environ: Mapping[str, str] | None = None) -> RegistrySettings | None:
    """The registry settings from the environment (the process's by default), or None when no URL is configured."""
    return registry_from(SchemaRegistrySettings.load(environ))


def registry_from(settings: SchemaRegistrySettings) -> RegistrySettings | None:
    """The client settings of validated registry settings, or None when no URL is configured."""
    if settings.url is None:
        return None
    return RegistrySettings(url=settings.url.rstrip("/"), username=settings.username,
                            password=settings.password.get_secret_value() if settings.password else None,
                            timeout_seconds=settings.timeout_seconds, subject_strategy=settings.subject_strategy)


def subject_name(strategy: SubjectStrategy, topic: str, record_name: str = ENVELOPE) -> str:
    """The subject a topic's value schema lives under, as Confluent's serializers name it."""
    if strategy == "topic":
        return f"{topic}-value"
    if strategy == "record":
        return record_name
    return f"{topic}-{record_name}"


def connect(settings: RegistrySettings) -> SchemaRegistryClient:
    """A registry client for ``settings``."""
    return SchemaRegistryClient(settings.client_config())


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP stack the registry client uses (httpx, or httpx2 where installed)."""
    errors: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)
    try:
        import httpx2  # type: ignore[import-not-found, unused-ignore]  # optional; newer client stacks use it
    except ImportError:
        return errors
    return (*errors, httpx2.HTTPError)


_TRANSPORT_ERRORS = _transport_errors()


def call_registry(action: str, call: Callable[[], T]) -> T:
    """Runs one registry request, turning transport failures into `RegistryUnavailableError`.

    A 404 (`SchemaRegistryError`) is passed on: whether that is the record's fault depends on the call.
    """
    try:
        return call()
    except SchemaRegistryError as exc:
        if exc.http_status_code in (404, 409, 422):
            raise
        raise RegistryUnavailableError(f"schema registry failed to {action}: HTTP {exc.http_status_code} "
                                       f"{exc.error_message}") from exc
    except _TRANSPORT_ERRORS as exc:
        raise RegistryUnavailableError(f"schema registry unreachable while trying to {action}: {exc!r}") from exc
    except json.JSONDecodeError as exc:
        raise RegistryUnavailableError(f"schema registry sent a non-JSON answer to {action}") from exc


class RegistryWriterLookup:
    """Finds a Confluent schema id's writer schema, parsed for fastavro; asks once per id.

    Use as `EventDecoder`'s ``registry_lookup``. Thread-safe; only successful answers are cached,
    so an id that is unknown now is asked again later (ids are immutable once they exist).
    """

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._cache: dict[int, ParsedSchema] = {}
        self.requests = 0

    def is_cached(self, schema_id: int) -> bool:
        """Whether ``schema_id`` is answered without asking the registry."""
        return schema_id in self._cache

    def __call__(self, schema_id: int, raw: bytes) -> ParsedSchema:
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._cache.get(schema_id)
            if cached is None:
                cached = self._cache[schema_id] = self._fetch(schema_id, raw)
        return cached

    def _fetch(self, schema_id: int, raw: bytes) -> ParsedSchema:
        self.requests += 1
        try:
            schema = call_registry(f"get schema id {schema_id}", partial(self._client.get_schema, schema_id))
        except SchemaRegistryError as exc:
            raise UnknownSchemaError(f"schema id {schema_id} is unknown to the registry ({exc.error_message})",
                                     raw) from exc
        if (schema.schema_type or "AVRO") != "AVRO":
            raise SchemaResolutionError(f"schema id {schema_id} is {schema.schema_type}, not AVRO", raw)
        named: dict[str, ParsedSchema] = {}
        for reference in schema.references or []:
            if reference.subject is None or reference.version is None:
                raise SchemaResolutionError(f"schema id {schema_id} has a reference without subject or version", raw)
            referenced = call_registry(f"get reference {reference.subject} v{reference.version}",
                                       partial(self._client.get_version, reference.subject, reference.version))
            self._parse(referenced.schema.schema_str or "", named, schema_id, raw)
        parsed = self._parse(schema.schema_str or "", named, schema_id, raw)
        log.info("writer_schema_fetched", schema_id=schema_id, schema_name=parsed.get("name"),
                 references=len(schema.references or []))
        return parsed

    @staticmethod
    def _parse(text: str, named: dict[str, ParsedSchema], schema_id: int, raw: bytes) -> ParsedSchema:
        try:
            parsed = parse_schema(json.loads(text), named_schemas=named)
        except (ValueError, SchemaParseException, KeyError, TypeError) as exc:
            raise SchemaResolutionError(f"schema id {schema_id} is not a valid Avro schema: {exc}", raw) from exc
        if not isinstance(parsed, dict):
            raise SchemaResolutionError(f"schema id {schema_id} is not an Avro record schema", raw)
        return parsed


def envelope_schema(expanded_json: str) -> Schema:
    """The envelope as a registry `Schema` (every named type inlined, no references)."""
    return Schema(expanded_json, "AVRO")
