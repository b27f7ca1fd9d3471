"""Every Eventflow setting, declared once: environment variable, type, default and meaning.

`load_settings` reads the environment once at start-up into nested frozen dataclasses and raises
`ConfigError` naming the variable on the first invalid value. librdkafka settings pass through
from ``EVENTFLOW_LIBRDKAFKA_*`` (``EVENTFLOW_LIBRDKAFKA_SASL_MECHANISM`` becomes ``sasl.mechanism``);
any other ``EVENTFLOW_*`` variable that is not declared here is an error, so typos fail loudly.
The README's configuration table is generated from `SETTINGS` (``eventflow config table``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from eventflow.errors import ConfigError

T = TypeVar("T")

LIBRDKAFKA_PREFIX = "EVENTFLOW_LIBRDKAFKA_"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One declared setting."""

    env: str
    parse: Callable[[str], T]
    default: T | None
    doc: str
    type_name: str = "str"

    def read(self, environ: Mapping[str, str]) -> T | None:
        raw = environ.get(self.env)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(self.env, f"invalid value {raw!r}: {exc}") from exc


def positive_int(raw: str) -> int:
    """Parser for a whole number > 0."""
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def non_negative_int(raw: str) -> int:
    """Parser for a whole number >= 0."""
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def port_number(raw: str) -> int:
    """Parser for a TCP port; 0 means disabled."""
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0 disables)")
    return value


def positive_float(raw: str) -> float:
    """Parser for a number > 0."""
    value = float(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not items:
        raise ValueError("must list at least one name")
    return items


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _s(env: str, default: str | None, doc: str) -> Setting[str]:
    return Setting(env, str, default, doc)


_SETTINGS: list[Setting[Any]] = [
    _s("KAFKA_BOOTSTRAP_SERVERS", None, "Kafka bootstrap servers; unset means the local dev stack (`eventflow dev`)."),
    Setting("EVENTFLOW_TOPICS", _csv, ("customer-events",), "Comma-separated topics the consumer reads.", "csv"),
    _s("EVENTFLOW_CONSUMER_GROUP", "eventflow", "Kafka consumer group id."),
    _s("EVENTFLOW_DLQ_TOPIC", "customer-events.dlq", "Dead-letter topic for records that cannot be decoded."),
    Setting("EVENTFLOW_MAX_IN_FLIGHT", positive_int, 512, "Events in flight per consumer before partitions pause.", "int"),
    Setting("EVENTFLOW_SHUTDOWN_GRACE_SECONDS", positive_float, 30.0, "Drain deadline on SIGTERM.", "float"),
    _s("TEMPORAL_ADDRESS", None, "Temporal frontend host:port; unset means the local dev stack."),
    _s("TEMPORAL_NAMESPACE", "default", "Temporal namespace."),
    _s("TEMPORAL_API_KEY", None, "Temporal Cloud API key (implies TLS)."),
    _s("TEMPORAL_TLS_CA", None, "Path to the CA certificate for the Temporal server (enables TLS)."),
    _s("TEMPORAL_TLS_CERT", None, "Path to the client certificate for mTLS."),
    _s("TEMPORAL_TLS_KEY", None, "Path to the client private key for mTLS."),
    _s("EVENTFLOW_TASK_QUEUE", "eventflow-journeys", "Temporal task queue of the journey workers."),
    Setting("EVENTFLOW_METRICS_PORT", port_number, 9464, "Port of /metrics, /healthz and /readyz (0 disables).", "int"),
    Setting("EVENTFLOW_LOG_FORMAT", _choice("json", "console"), "json", "Log rendering: json or console.", "choice"),
    _s("EVENTFLOW_AVRO_DIR", None, "Folder of Avro schemas; default the repository's avro/."),
    _s("EVENTFLOW_JOURNEYS_DIR", None, "Folder with definitions/ and templates/; default the repository's journeys/."),
    _s("EVENTFLOW_OUTBOX_PATH", None, "JSON Lines file the outbox channel writes; default <cache>/outbox.jsonl."),
    _s("EVENTFLOW_CACHE_DIR", None, "Cache for provisioned servers, their data and logs; default $XDG_CACHE_HOME/eventflow."),
    Setting("EVENTFLOW_DEV_KAFKA_PORT", port_number, 19092, "Dev stack Kafka port (controller uses port+1).", "int"),
    Setting("EVENTFLOW_DEV_TEMPORAL_PORT", port_number, 7233, "Dev stack Temporal frontend port.", "int"),
    Setting("EVENTFLOW_DEV_TEMPORAL_UI_PORT", port_number, 8233, "Dev stack Temporal Web UI port.", "int"),
]

SETTINGS: dict[str, Setting[Any]] = {s.env: s for s in _SETTINGS}


def register(setting: Setting[Any]) -> None:
    """Declares a setting from another module (channels, registry); must happen at import time."""
    if setting.env in SETTINGS and SETTINGS[setting.env] is not setting:
        raise ValueError(f"setting {setting.env} declared twice")
    _SETTINGS.append(setting)
    SETTINGS[setting.env] = setting


def read(env: str, environ: Mapping[str, str] | None = None) -> object:
    """Reads one declared setting."""
    return SETTINGS[env].read(os.environ if environ is None else environ)


def check_unknown(environ: Mapping[str, str]) -> None:
    """Fails on any ``EVENTFLOW_*`` variable that is neither declared nor a librdkafka pass-through."""
    for name in environ:
        if name.startswith("EVENTFLOW_") and name not in SETTINGS and not name.startswith(LIBRDKAFKA_PREFIX):
            raise ConfigError(name, "unknown Eventflow setting (see the configuration table in README.md)")


def librdkafka_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """``EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes ``{"security.protocol": "SASL_SSL"}``."""
    return {
        name[len(LIBRDKAFKA_PREFIX):].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(LIBRDKAFKA_PREFIX)
    }


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    topics: tuple[str, ...]
    consumer_group: str
    dlq_topic: str
    librdkafka: Mapping[str, str]

    def client_config(self) -> dict[str, str]:
        """Base librdkafka config shared by consumers, producers and admin clients."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.librdkafka}


@dataclass(frozen=True)
class TemporalSettings:
    address: str
    namespace: str
    task_queue: str
    api_key: str | None = None
    tls_ca_path: Path | None = None
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None


@dataclass(frozen=True)
class ConsumerSettings:
    max_in_flight: int
    shutdown_grace_seconds: float


@dataclass(frozen=True)
class Settings:
    """Everything a process needs, validated."""

    kafka: KafkaSettings
    temporal: TemporalSettings
    consumer: ConsumerSettings
    metrics_port: int
    log_format: str


def _path(environ: Mapping[str, str], env: str) -> Path | None:
    raw = SETTINGS[env].read(environ)
    if raw is None:
        return None
    path = Path(str(raw))
    if not path.exists():
        raise ConfigError(env, f"file {path} does not exist")
    return path


def load_settings(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> Settings:
    """Reads and validates the process settings once.

    Args:
        environ: the environment; ``os.environ`` by default.
        dev_defaults: when Kafka or Temporal addresses are unset, use the local dev stack's
            addresses instead of failing.
    """
    env = os.environ if environ is None else environ
    check_unknown(env)

    def get(name: str) -> Any:
        return SETTINGS[name].read(env)

    bootstrap = get("KAFKA_BOOTSTRAP_SERVERS") or (
        f"127.0.0.1:{get('EVENTFLOW_DEV_KAFKA_PORT')}" if dev_defaults else None
    )
    if bootstrap is None:
        raise ConfigError("KAFKA_BOOTSTRAP_SERVERS", "is required")
    address = get("TEMPORAL_ADDRESS") or (f"127.0.0.1:{get('EVENTFLOW_DEV_TEMPORAL_PORT')}" if dev_defaults else None)
    if address is None:
        raise ConfigError("TEMPORAL_ADDRESS", "is required")
    cert, key = _path(env, "TEMPORAL_TLS_CERT"), _path(env, "TEMPORAL_TLS_KEY")
    if (cert is None) != (key is None):
        raise ConfigError("TEMPORAL_TLS_CERT" if cert is None else "TEMPORAL_TLS_KEY",
                          "mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY")
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=str(bootstrap),
            topics=get("EVENTFLOW_TOPICS"),
            consumer_group=str(get("EVENTFLOW_CONSUMER_GROUP")),
            dlq_topic=str(get("EVENTFLOW_DLQ_TOPIC")),
            librdkafka=librdkafka_overrides(env),
        ),
        temporal=TemporalSettings(
            address=str(address),
            namespace=str(get("TEMPORAL_NAMESPACE")),
            task_queue=str(get("EVENTFLOW_TASK_QUEUE")),
            api_key=get("TEMPORAL_API_KEY"),
            tls_ca_path=_path(env, "TEMPORAL_TLS_CA"),
            tls_cert_path=cert,
            tls_key_path=key,
        ),
        consumer=ConsumerSettings(
            max_in_flight=get("EVENTFLOW_MAX_IN_FLIGHT"),
            shutdown_grace_seconds=get("EVENTFLOW_SHUTDOWN_GRACE_SECONDS"),
        ),
        metrics_port=get("EVENTFLOW_METRICS_PORT"),
        log_format=str(get("EVENTFLOW_LOG_FORMAT")),
    )


def markdown_table() -> str:
    """The README's configuration table, generated from the declarations."""
    rows = ["| Variable | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS.values():
        default = setting.default
        shown = ",".join(default) if isinstance(default, tuple) else ("" if default is None else str(default))
        rows.append(f"| `{setting.env}` | {setting.type_name} | {f'`{shown}`' if shown else '—'} | {setting.doc} |")
    rows.append(f"| `{LIBRDKAFKA_PREFIX}*` | str | — | Passed to librdkafka: `{LIBRDKAFKA_PREFIX}SASL_MECHANISM` sets `sasl.mechanism`. |")
    return "\n".join(rows)
