"""Every Eventflow setting, declared once as a typed field of a settings class, one class per concern.

Each class (`KafkaSettings`, `TemporalSettings`, ...) is a frozen pydantic-settings model whose
fields name their environment variable (``validation_alias``), type, default and meaning. A class
reads the environment only when asked (``X.load(environ)``): importing this module, or any module
that uses it, reads and registers nothing. A process composes the classes it reads
(`ConsumerProcessSettings`, `WorkerProcessSettings`, `ToolSettings`) and loads them once at start-up.

Errors are one line, `ConfigError` naming the variable. An ``EVENTFLOW_*`` variable that no
Eventflow process reads is an error too (`check_unknown`), judged against the union of every
process's settings, so one shared ConfigMap may carry both the consumer's and the worker's
settings. librdkafka settings pass through from ``EVENTFLOW_LIBRDKAFKA_*``
(``EVENTFLOW_LIBRDKAFKA_SASL_MECHANISM`` becomes ``sasl.mechanism``).

This module is the only one that reads ``os.environ``; the README's configuration table is
generated from the classes (``eventflow config --update-readme``).
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, cast, get_args, get_origin, get_type_hints

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.codec import Keyring, KeyringError
from core.vocabulary import CHANNELS
from core.errors import ConfigError
from core.signing import SigningKeys, SigningKeysError

LIBRDKAFKA_PREFIX = "EVENTFLOW_LIBRDKAFKA_"

# Vocabularies. `events.codec.Encoding` and `events.registry.SubjectStrategy` are these (a test checks).
Encoding = Literal["auto", "registry", "embedded", "json"]
SubjectStrategy = Literal["topic", "record", "topic_record"]
LogFormat = Literal["json", "console"]
EmailProvider = Literal["outbox", "sendgrid", "smtp"]
SmtpSecurityMode = Literal["starttls", "tls", "none"]
MessagingProvider = Literal["outbox", "twilio"]
CatalogSource = Literal["files", "kafka"]

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def _csv(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not items:
        raise ValueError("must list at least one name")
    return items


def _pairs_of(shape: str) -> Callable[[object], object]:
    """A parser of ``a=b,c=d`` into a dict; a malformed item is an error naming ``shape``."""

    def parse(raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{part!r} is not {shape}")
            pairs[key.strip()] = value.strip()
        return pairs

    return parse


_QUIET_HOURS = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d)?$")


def _quiet_hours(value: str) -> str:
    if not _QUIET_HOURS.match(value):
        raise ValueError("must look like 21:00-08:00")
    return value


_CAP_GROUP = r"\s*(" + "|".join((*CHANNELS, "all")) + r")\s*:\s*(day|week|month)\s*=\s*\d+(\s*,\s*(day|week|month)\s*=\s*\d+)*\s*"
_CAPS = re.compile(rf"^({_CAP_GROUP}(;{_CAP_GROUP})*)?;?\s*$")


def _caps(value: str) -> str:
    # The grammar's shape; activities.caps.CapSet reads it (and rejects a window given twice) at start-up.
    if not _CAPS.match(value):
        raise ValueError("must look like email:day=2,week=5;all:month=20 (scopes email, sms, whatsapp, all; "
                         "windows day, week, month)")
    return value


def _secret_hosts(raw: object) -> object:
    pairs = _pairs_of("secret=host host:port")(raw)
    if not isinstance(pairs, dict):
        return pairs
    # Hosts are separated by spaces (``|`` is accepted too, but breaks the README's table).
    hosts = {name.lower(): tuple(str(value).replace("|", " ").split()) for name, value in pairs.items()}
    if empty := [name for name, listed in hosts.items() if not listed]:
        raise ValueError(f"secret {empty[0]!r} lists no host")
    return hosts


def _phone_region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a region code libphonenumber knows, e.g. DE, GB, US (ISO 3166-1 alpha-2)")
    return region


Csv = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_csv)]
UncertainDeliveryPolicy = Literal["at_most_once", "at_least_once"]
UpstreamSampling = Literal["respect", "ratio"]
HeaderMap = Annotated[dict[str, str], NoDecode, BeforeValidator(_pairs_of("name=value"))]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
EncodingMap = Annotated[dict[str, Encoding], NoDecode, BeforeValidator(_pairs_of("topic=encoding"))]
QuietHours = Annotated[str, AfterValidator(_quiet_hours)]
CapsSpec = Annotated[str, AfterValidator(_caps)]
#: ``secret=host host:port,...``: the hosts each webhook Secret may be sent to.
SecretHosts = Annotated[dict[str, tuple[str, ...]], NoDecode, BeforeValidator(_secret_hosts)]
PhoneRegion = Annotated[str, AfterValidator(_phone_region)]


def env(variable: str, default: Any = PydanticUndefined, doc: str = "") -> Any:
    """A field read from ``variable``; its ``doc`` is the README's meaning column."""
    return Field(default, validation_alias=variable, description=doc)


class Process(StrEnum):
    """The Eventflow processes, as the README's "read by" column names them."""

    CONSUMER = "consumer"
    WORKER = "worker"
    CLI = "cli"
    CODEC_SERVER = "codec-server"
    WEBHOOKS = "webhooks"


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, limited to the class's variables."""

    def __init__(self, settings_cls: type[SettingsGroup], environ: Mapping[str, str]) -> None:
        wanted = settings_cls.variables()
        self._environ = {name: value for name, value in environ.items() if name in wanted}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class SettingsGroup(BaseSettings):
    """One concern's settings; ``load`` reads them from an environment and fails naming the variable."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, frozen=True, extra="ignore",
                                      validate_by_name=True, validate_by_alias=True)

    #: The concern, as the README groups it.
    concern: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Building a group from keywords (tests, composition) reads no environment; only `load` does."""
        return (init_settings,)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Environment variable -> field name, in declaration order."""
        return {field.validation_alias: name for name, field in cls.model_fields.items()
                if isinstance(field.validation_alias, str)}

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field``."""
        alias = cls.model_fields[field].validation_alias
        assert isinstance(alias, str), f"{cls.__name__}.{field} is not read from the environment"
        return alias

    @classmethod
    def _extra(cls, environ: Mapping[str, str]) -> dict[str, object]:
        """Values that do not come from one variable each (overridden by `KafkaSettings`)."""
        return {}

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Reads this class's variables from ``environ`` (``os.environ`` by default).

        Raises:
            ConfigError: naming the first variable whose value is invalid or missing.
        """
        environ = os.environ if environ is None else environ
        try:
            return cls.model_validate({**_EnvironSource(cls, environ)(), **cls._extra(environ)})
        except ValidationError as exc:
            raise _config_error(cls, exc, environ) from None


def _config_error(cls: type[SettingsGroup], exc: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    error = exc.errors()[0]
    variable = str(error["loc"][0]) if error["loc"] else cls.__name__
    if error["type"] == "missing":
        return ConfigError(variable, "is required")
    problem = str(error["msg"]).removeprefix("Value error, ")
    field = cls.variables().get(variable)
    secret = field is not None and _is_secret(cls.model_fields[field])
    raw = environ.get(variable)
    return ConfigError(variable, problem if secret or raw is None else f"invalid value {raw!r}: {problem}")


def _secret_from_file(data: object, variable: str) -> object:
    """``<variable>_FILE`` names a mounted secret; its content wins over ``<variable>``."""
    if not isinstance(data, dict) or not data.get(f"{variable}_FILE"):
        return data
    path = Path(str(data[f"{variable}_FILE"]))
    try:
        return {**data, variable: path.read_text().strip()}
    except OSError as exc:
        raise ConfigError(f"{variable}_FILE", f"cannot read {path}: {exc.strerror}") from exc


# -- kafka ------------------------------------------------------------------------------------------

class KafkaSettings(SettingsGroup):
    """Where the events are: brokers, topics, consumer group and dead-letter topic."""

    concern: ClassVar[str] = "kafka"

    bootstrap_servers: str = env("KAFKA_BOOTSTRAP_SERVERS",
                                 doc="Kafka bootstrap servers; unset means the local dev stack (`eventflow dev`).")
    topics: Csv = env("EVENTFLOW_TOPICS", ("customer-events",), "Comma-separated topics the consumer reads.")
    consumer_group: str = env("EVENTFLOW_CONSUMER_GROUP", "eventflow", "Kafka consumer group id.")
    dlq_topic: str = env("EVENTFLOW_DLQ_TOPIC", "customer-events.dlq",
                         "Dead-letter topic for records that cannot be decoded.")
    librdkafka: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def _extra(cls, environ: Mapping[str, str]) -> dict[str, object]:
        return {"librdkafka": librdkafka_overrides(environ)}

    @model_validator(mode="after")
    def _librdkafka_files_exist(self) -> Self:
        # librdkafka reads these when a client is created, deep in start-up, and says only
        # "ssl.ca.location failed: ... BIO lib": check them here, naming the variable.
        for name in LIBRDKAFKA_FILE_PROPERTIES:
            location = self.librdkafka.get(name)
            if location and location != "probe" and not Path(location).exists():
                raise ConfigError(librdkafka_variable(name), f"file {location} does not exist")
        return self

    def client_config(self) -> dict[str, str]:
        """Base librdkafka config shared by consumers, producers and admin clients."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.librdkafka}


#: librdkafka settings that name a file ("probe" lets ssl.ca.location find the system's CAs).
LIBRDKAFKA_FILE_PROPERTIES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
                              "ssl.keystore.location", "ssl.crl.location", "sasl.kerberos.keytab")


def librdkafka_variable(name: str) -> str:
    """The variable that sets librdkafka's ``name``: ``ssl.ca.location`` is ``EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION``."""
    return f"{LIBRDKAFKA_PREFIX}{name.upper().replace('.', '_')}"


def librdkafka_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """``EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes ``{"security.protocol": "SASL_SSL"}``."""
    return {
        name[len(LIBRDKAFKA_PREFIX):].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(LIBRDKAFKA_PREFIX)
    }


# -- temporal ---------------------------------------------------------------------------------------

class TemporalSettings(SettingsGroup):
    """How to reach Temporal, and the journeys' task queue."""

    concern: ClassVar[str] = "temporal"

    address: str = env("TEMPORAL_ADDRESS", doc="Temporal frontend host:port; unset means the local dev stack.")
    namespace: str = env("TEMPORAL_NAMESPACE", "default", "Temporal namespace.")
    task_queue: str = env("EVENTFLOW_TASK_QUEUE", "eventflow-journeys", "Temporal task queue of the journey workers.")
    api_key: SecretStr | None = env("TEMPORAL_API_KEY", None, "Temporal Cloud API key (implies TLS).")
    tls_ca_path: Path | None = env("TEMPORAL_TLS_CA", None,
                                    "Path to the CA certificate for the Temporal server (enables TLS).")
    tls_cert_path: Path | None = env("TEMPORAL_TLS_CERT", None, "Path to the client certificate for mTLS.")
    tls_key_path: Path | None = env("TEMPORAL_TLS_KEY", None, "Path to the client private key for mTLS.")
    payload_keys: SecretStr | None = env("EVENTFLOW_PAYLOAD_KEYS", None,
                                         "Payload encryption keys as `id=base64,id=base64` (32-byte AES-256 keys, "
                                         "`openssl rand -base64 32`); unset: payloads are not encrypted (or "
                                         "EVENTFLOW_PAYLOAD_KEYS_FILE).")
    payload_keys_file: Path | None = env("EVENTFLOW_PAYLOAD_KEYS_FILE", None,
                                         "File holding the payload keys, one `id=base64` a line (a mounted "
                                         "Secret); wins over EVENTFLOW_PAYLOAD_KEYS.")
    payload_encrypt_key_id: str | None = env("EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID", None,
                                             "Id of the key that encrypts new payloads (the others only decrypt); "
                                             "optional with one key.")
    payload_keys_required: bool = env("EVENTFLOW_PAYLOAD_KEYS_REQUIRED", False,
                                      "Refuse to start without payload keys (the Helm chart sets it outside "
                                      "development mode).")

    @model_validator(mode="before")
    @classmethod
    def _payload_keys_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_PAYLOAD_KEYS")

    @model_validator(mode="after")
    def _payload_keys_valid(self) -> Self:
        variable = self.variable("payload_keys_file" if self.payload_keys_file else "payload_keys")
        if self.payload_keys is None:
            if self.payload_keys_required:
                raise ConfigError(variable, "is required (EVENTFLOW_PAYLOAD_KEYS_REQUIRED=true: contact details "
                                  "must not reach Temporal in clear)")
            if self.payload_encrypt_key_id is not None:
                raise ConfigError(self.variable("payload_encrypt_key_id"), "is set but no payload keys are")
            return self
        try:
            self.payload_keyring()
        except KeyringError as exc:
            raise ConfigError(self.variable("payload_encrypt_key_id") if exc.encrypt_key_id else variable,
                              str(exc)) from None
        return self

    def payload_keyring(self) -> Keyring | None:
        """The payload keys, or None when payloads are not encrypted.

        Raises:
            KeyringError: when the keys are unusable (`load` has checked them already).
        """
        if self.payload_keys is None:
            return None
        return Keyring.parse(self.payload_keys.get_secret_value(), self.payload_encrypt_key_id)

    @model_validator(mode="after")
    def _files_exist_and_mtls_needs_both(self) -> Self:
        # Checked here rather than on the fields, so a value can be checked alone where the file
        # is not (a rendered chart's pod paths).
        for field in ("tls_ca_path", "tls_cert_path", "tls_key_path"):
            path = getattr(self, field)
            if path is not None and not path.exists():
                raise ConfigError(self.variable(field), f"file {path} does not exist")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigError("TEMPORAL_TLS_CERT" if self.tls_cert_path is None else "TEMPORAL_TLS_KEY",
                              "mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY")
        return self


# -- consumer ---------------------------------------------------------------------------------------

class ConsumerSettings(SettingsGroup):
    """The consumer loop's bounds; the drain deadline applies to the worker too."""

    concern: ClassVar[str] = "consumer"

    max_in_flight: PositiveInt = env("EVENTFLOW_MAX_IN_FLIGHT", 512,
                                     "Events in flight per consumer before partitions pause.")
    shutdown_grace_seconds: PositiveFloat = env("EVENTFLOW_SHUTDOWN_GRACE_SECONDS", 30.0, "Drain deadline on SIGTERM.")


# -- customer store ---------------------------------------------------------------------------------

class DatabaseSettings(SettingsGroup):
    """The customer store: a PostgreSQL database (docs/architecture.md, "Customer store in PostgreSQL")."""

    concern: ClassVar[str] = "database"

    url: SecretStr | None = env("EVENTFLOW_DATABASE_URL", None,
                                "PostgreSQL DSN of the customer store (`postgresql://user:pass@host:5432/db?sslmode="
                                "verify-full`); unset: the dev stack's server for a process on the dev stack (no Kafka or "
                                "Temporal address set), else customer state stays in Temporal workflows (the pre-store "
                                "layout, for upgrades).")
    url_file: Path | None = env("EVENTFLOW_DATABASE_URL_FILE", None,
                                "File holding EVENTFLOW_DATABASE_URL (a mounted Secret); wins over the variable.")
    pool_min_size: NonNegativeInt = env("EVENTFLOW_DATABASE_POOL_MIN_SIZE", 1, "Connections kept open per process.")
    pool_max_size: PositiveInt = env("EVENTFLOW_DATABASE_POOL_MAX_SIZE", 10,
                                     "Connections per process at most; callers wait for a free one beyond.")
    statement_timeout_seconds: PositiveFloat = env("EVENTFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS", 5.0,
                                                   "Server-side limit of one statement.")
    connect_timeout_seconds: PositiveFloat = env("EVENTFLOW_DATABASE_CONNECT_TIMEOUT_SECONDS", 10.0,
                                                 "Limit of opening one connection.")

    @model_validator(mode="before")
    @classmethod
    def _url_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_DATABASE_URL")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        url = self.url.get_secret_value() if self.url else None
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            # The value is a secret (it may hold a password): the message does not repeat it.
            raise ConfigError(self.variable("url"), "must be a postgresql:// DSN")
        if self.pool_min_size > self.pool_max_size:
            raise ConfigError(self.variable("pool_min_size"),
                              f"must not exceed {self.variable('pool_max_size')} ({self.pool_max_size})")
        return self

    def dsn(self) -> str | None:
        """The DSN, or None when no customer store is configured."""
        return self.url.get_secret_value() if self.url is not None else None


# -- ops / logging ----------------------------------------------------------------------------------

class OpsSettings(SettingsGroup):
    """The ops HTTP server and log rendering."""

    concern: ClassVar[str] = "ops"

    metrics_port: Port = env("EVENTFLOW_METRICS_PORT", 9464, "Port of /metrics, /healthz and /readyz (0 disables); "
                             "unset: 9464 for the consumer, 9466 for the worker, 9467 for webhooks, so they can "
                             "run on one host.")
    log_format: LogFormat = env("EVENTFLOW_LOG_FORMAT", "json", "Log rendering: json or console.")


class TracingSettings(SettingsGroup):
    """Where spans go (OTLP/HTTP); tracing is on only when an endpoint is set."""

    concern: ClassVar[str] = "tracing"

    otlp_endpoint: str | None = env("EVENTFLOW_OTLP_ENDPOINT", None,
                                    "OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); unset turns "
                                    "tracing off.")
    otlp_headers: HeaderMap = env("EVENTFLOW_OTLP_HEADERS", {},
                                  "Headers for the OTLP exporter as `name=value,name=value` (e.g. an API key).")
    sample_ratio: Ratio = env("EVENTFLOW_TRACE_SAMPLE_RATIO", 1.0,
                              "Share of new traces kept (0-1); a record's upstream sampling decision is followed "
                              "unless EVENTFLOW_TRACE_UPSTREAM_SAMPLING is `ratio`.")
    upstream_sampling: UpstreamSampling = env(
        "EVENTFLOW_TRACE_UPSTREAM_SAMPLING", "respect",
        "`respect`: a record whose producer marked its trace sampled (`traceparent ...-01`) is always traced; "
        "`ratio`: such records are kept at EVENTFLOW_TRACE_SAMPLE_RATIO too, so producers cannot force 100 %.")

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None


# -- dev stack --------------------------------------------------------------------------------------

class DevStackSettings(SettingsGroup):
    """The local stack's ports (the processes' default addresses) and the cache folder."""

    concern: ClassVar[str] = "dev stack"

    kafka_port: Port = env("EVENTFLOW_DEV_KAFKA_PORT", 19092, "Dev stack Kafka port (controller uses port+1).")
    temporal_port: Port = env("EVENTFLOW_DEV_TEMPORAL_PORT", 7233, "Dev stack Temporal frontend port.")
    temporal_ui_port: Port = env("EVENTFLOW_DEV_TEMPORAL_UI_PORT", 8233, "Dev stack Temporal Web UI port.")
    postgres_port: Port = env("EVENTFLOW_DEV_POSTGRES_PORT", 15432, "Dev stack PostgreSQL port (the customer store).")
    cache_dir: Path | None = env("EVENTFLOW_CACHE_DIR", None, "Cache for provisioned servers, their data and "
                                 "logs, and the default outbox; default $XDG_CACHE_HOME/eventflow.")
    xdg_cache_home: Path | None = env("XDG_CACHE_HOME", None,
                                      "Base of the default cache folder (XDG); default ~/.cache.")

    def cache_root(self) -> Path:
        """``$EVENTFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/eventflow``, else ``~/.cache/eventflow``."""
        if self.cache_dir is not None:
            return self.cache_dir.expanduser()
        base = self.xdg_cache_home.expanduser() if self.xdg_cache_home else Path.home() / ".cache"
        return base / "eventflow"


def dev_database_url(port: int) -> str:
    """The DSN of a local dev-stack PostgreSQL on ``port`` (role, password and database all ``eventflow``)."""
    return f"postgresql://eventflow:eventflow@127.0.0.1:{port}/eventflow"


# -- schema registry and event encodings ------------------------------------------------------------

class SchemaRegistrySettings(SettingsGroup):
    """How to reach a Confluent-compatible Schema Registry; no URL means none."""

    concern: ClassVar[str] = "registry"

    url: str | None = env("EVENTFLOW_SCHEMA_REGISTRY_URL", None, "Confluent-compatible Schema Registry URL "
                          "(Apicurio: `.../apis/ccompat/v7`); unset: no registry.")
    username: str | None = env("EVENTFLOW_SCHEMA_REGISTRY_USERNAME", None,
                               "Schema Registry basic-auth user (or API key).")
    password: SecretStr | None = env("EVENTFLOW_SCHEMA_REGISTRY_PASSWORD", None,
                                     "Schema Registry basic-auth password (or API secret).")
    timeout_seconds: PositiveFloat = env("EVENTFLOW_SCHEMA_REGISTRY_TIMEOUT_SECONDS", 10.0,
                                         "Timeout of one Schema Registry request.")
    subject_strategy: SubjectStrategy = env("EVENTFLOW_SUBJECT_NAME_STRATEGY", "topic",
                                            "Registry subject naming: topic (`<topic>-value`), record (`<record>`), "
                                            "topic_record (`<topic>-<record>`).")

    @model_validator(mode="after")
    def _basic_auth_needs_both(self) -> Self:
        if self.url is not None and (self.username is None) != (self.password is None):
            missing = "username" if self.username is None else "password"
            raise ConfigError(self.variable(missing), "basic auth needs both the username and the password")
        return self


class EventSettings(SettingsGroup):
    """How each topic's events are encoded, and where the Avro schemas are."""

    concern: ClassVar[str] = "events"

    avro_dir: Path | None = env("EVENTFLOW_AVRO_DIR", None, "Folder of Avro schemas; default the repository's avro/.")
    topic_encodings: EncodingMap = env("EVENTFLOW_TOPIC_ENCODINGS", {}, "Per-topic value encoding, "
                                       "`topic=registry,other=embedded`; encodings: auto, registry, embedded, json.")
    default_encoding: Encoding = env("EVENTFLOW_DEFAULT_ENCODING", "auto",
                                     "Encoding of topics not in EVENTFLOW_TOPIC_ENCODINGS: auto (Confluent wire format "
                                     "or Avro single-object, by magic byte), registry, embedded or json.")
    auto_register: bool = env("EVENTFLOW_SCHEMA_REGISTRY_AUTO_REGISTER", False,
                              "Producer registers the envelope schema if the subject lacks it "
                              "(off: run `eventflow schemas register` first).")


# -- journeys ---------------------------------------------------------------------------------------

class JourneySettings(SettingsGroup):
    """Where the journey definitions and templates are."""

    concern: ClassVar[str] = "journeys"

    journeys_dir: Path | None = env("EVENTFLOW_JOURNEYS_DIR", None,
                                    "Folder with definitions/ and templates/; default the repository's journeys/.")


class CatalogSettings(SettingsGroup):
    """Where consumers and workers take the journeys from: files, or the live catalog topic."""

    concern: ClassVar[str] = "journeys"

    source: CatalogSource = env("EVENTFLOW_CATALOG_SOURCE", "files",
                                "files: the journeys folder, read at start; kafka: the catalog topic, followed "
                                "live (`eventflow journeys publish`); the worker then reads the Kafka settings too.")
    topic: str = env("EVENTFLOW_CATALOG_TOPIC", "eventflow.journeys",
                     "Compacted one-partition topic of journey catalog entries.")
    startup_timeout_seconds: PositiveFloat = env("EVENTFLOW_CATALOG_STARTUP_TIMEOUT_SECONDS", 20.0,
                                                 "How long start-up may take to read the catalog topic to its end.")
    author: str | None = env("USER", None, "Default author of catalog changes (`eventflow journeys publish "
                             "--author` overrides).")
    signing_keys: SecretStr | None = env("EVENTFLOW_CATALOG_SIGNING_KEYS", None,
                                         "Keys that sign and verify catalog entries (HMAC-SHA256) as `id=base64,"
                                         "id=base64` (32+ bytes each, `openssl rand -base64 32`); entries not signed "
                                         "by one are skipped. Required with the catalog source kafka and by the "
                                         "catalog commands, unless EVENTFLOW_CATALOG_ALLOW_UNSIGNED (or "
                                         "EVENTFLOW_CATALOG_SIGNING_KEYS_FILE).")
    signing_keys_file: Path | None = env("EVENTFLOW_CATALOG_SIGNING_KEYS_FILE", None,
                                         "File holding the catalog signing keys, one `id=base64` a line (a mounted "
                                         "Secret); wins over EVENTFLOW_CATALOG_SIGNING_KEYS.")
    signing_key_id: str | None = env("EVENTFLOW_CATALOG_SIGNING_KEY_ID", None,
                                     "Id of the key `eventflow journeys` signs new entries with (the others only "
                                     "verify); optional with one key.")
    allow_unsigned: bool = env("EVENTFLOW_CATALOG_ALLOW_UNSIGNED", False,
                               "Development only: without signing keys, accept (and write) unsigned catalog "
                               "entries. Ignored when keys are set. The Helm chart sets it in devMode.")

    @model_validator(mode="before")
    @classmethod
    def _signing_keys_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_CATALOG_SIGNING_KEYS")

    @model_validator(mode="after")
    def _signing_keys_valid(self) -> Self:
        if self.signing_keys is None:
            if self.signing_key_id is not None:
                raise ConfigError(self.variable("signing_key_id"), "is set but no signing keys are")
            if self.source == "kafka":
                self.trust()
            return self
        try:
            self.trust()
        except SigningKeysError as exc:
            variable = "signing_key_id" if exc.signing_key_id else \
                "signing_keys_file" if self.signing_keys_file else "signing_keys"
            raise ConfigError(self.variable(variable), str(exc)) from None
        return self

    def trust(self) -> SigningKeys | None:
        """The keys catalog entries are signed and verified with; None when unsigned entries are accepted.

        Raises:
            ConfigError: no keys, and unsigned entries are not allowed (outside development).
            SigningKeysError: the keys are unusable (`load` has checked them already).
        """
        if self.signing_keys is None:
            if not self.allow_unsigned:
                raise ConfigError(self.variable("signing_keys_file" if self.signing_keys_file else "signing_keys"),
                                  "is required to read or write the journey catalog: only entries signed with "
                                  "one of these keys are trusted (EVENTFLOW_CATALOG_ALLOW_UNSIGNED=true accepts "
                                  "unsigned ones, for development only)")
            return None
        return SigningKeys.parse(self.signing_keys.get_secret_value(), self.signing_key_id)


# -- worker -----------------------------------------------------------------------------------------

class WorkerSettings(SettingsGroup):
    """One worker replica's capacity, its SDK metrics, and the send defaults."""

    concern: ClassVar[str] = "worker"

    max_concurrent_activities: PositiveInt = env("EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES", 100,
                                                 "Send activities one worker replica runs at once.")
    max_concurrent_workflow_tasks: PositiveInt = env("EVENTFLOW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", 100,
                                                     "Workflow tasks one worker replica runs at once.")
    temporal_metrics_port: Port = env("EVENTFLOW_TEMPORAL_METRICS_PORT", 9465, "Loopback port of the Temporal SDK's "
                                      "Prometheus exporter, merged into /metrics (0 disables).")
    quiet_hours: QuietHours = env("EVENTFLOW_QUIET_HOURS", "", "Default quiet hours in the customer's timezone, "
                                  "e.g. 21:00-08:00; empty for none.")
    daily_cap: NonNegativeInt = env("EVENTFLOW_DAILY_CAP", 0,
                                    "Default sends per channel per customer per local day; 0 for no cap.")
    send_lease_seconds: PositiveFloat = env("EVENTFLOW_SEND_LEASE_SECONDS", 30.0,
                                            "How long one send attempt may call the provider before another "
                                            "attempt may; above the provider timeout (ADR-9).")
    uncertain_delivery: UncertainDeliveryPolicy = env(
        "EVENTFLOW_UNCERTAIN_DELIVERY", "at_most_once",
        "After a crash between a provider's accept and its record, on channels that cannot be asked (SendGrid): "
        "at_most_once (record `uncertain`, do not resend) or at_least_once (resend).")
    caps: CapsSpec = env("EVENTFLOW_CAPS", "", "Default rolling frequency caps per customer, per channel or `all` "
                         "channels, over the last 1 (day), 7 (week) or 30 (month) local days, e.g. "
                         "email:day=2,week=5;all:month=20; empty for none (journeys/README.md).")
    caps_priority_reserve: NonNegativeInt = env("EVENTFLOW_CAPS_PRIORITY_RESERVE", 1,
                                                "Slots of each rolling cap that each priority level keeps free "
                                                "for the levels above it (high > normal > low).")
    providers_reporting: Annotated[tuple[str, ...], BeforeValidator(_csv)] = env(
        "EVENTFLOW_PROVIDERS_REPORTING", (),
        "Providers whose delivery webhooks reach `eventflow webhooks` (e.g. sendgrid): an uncertain send to one "
        "is settled by its report instead of EVENTFLOW_UNCERTAIN_DELIVERY (needs the customer store).")
    send_report_window_seconds: PositiveFloat = env(
        "EVENTFLOW_SEND_REPORT_WINDOW_SECONDS", 600.0,
        "How long after an uncertain provider call its report may take to arrive; none by then: it was not "
        "accepted and is sent again.")
    phone_default_region: PhoneRegion | None = env(
        "EVENTFLOW_PHONE_DEFAULT_REGION", None,
        "Region (ISO 3166 code, e.g. DE) of phone and WhatsApp numbers written without a country code "
        "(0151 ...); unset: such numbers are refused (failed:InvalidAddress), every number must be international.")


# -- channels and providers -------------------------------------------------------------------------

class ChannelSettings(SettingsGroup):
    """Which implementation serves each channel; the outbox and development mode."""

    concern: ClassVar[str] = "channels"

    dev_mode: bool = env("EVENTFLOW_DEV_MODE", False, "Development mode: lets the outbox channel (a local file) "
                         "serve channels that journeys use. Set by `eventflow dev run` and the tests; never in "
                         "production.")
    email_provider: EmailProvider = env("EVENTFLOW_EMAIL_PROVIDER", "outbox",
                                        "Email channel implementation: outbox, sendgrid or smtp.")
    sms_provider: MessagingProvider = env("EVENTFLOW_SMS_PROVIDER", "outbox",
                                          "SMS channel implementation: outbox or twilio.")
    whatsapp_provider: MessagingProvider = env("EVENTFLOW_WHATSAPP_PROVIDER", "outbox",
                                               "WhatsApp channel implementation: outbox or twilio.")
    outbox_path: Path | None = env("EVENTFLOW_OUTBOX_PATH", None,
                                   "JSON Lines file the outbox channel writes; default <cache>/outbox.jsonl.")
    provider_timeout_seconds: PositiveFloat = env("EVENTFLOW_PROVIDER_TIMEOUT_SECONDS", 10.0,
                                                  "Per-request timeout of provider calls.")

    def provider(self, channel: str) -> str:
        """The implementation of ``email``, ``sms`` or ``whatsapp``."""
        match channel:
            case "email":
                return self.email_provider
            case "sms":
                return self.sms_provider
            case "whatsapp":
                return self.whatsapp_provider
        raise KeyError(channel)


class SendGridSettings(SettingsGroup):
    """The SendGrid email provider."""

    concern: ClassVar[str] = "channels"

    api_key: SecretStr | None = env("SENDGRID_API_KEY", None, "SendGrid API key (or SENDGRID_API_KEY_FILE).")
    api_key_file: Path | None = env("SENDGRID_API_KEY_FILE", None,
                                    "File holding the SendGrid API key (a mounted secret).")
    base_url: str = env("EVENTFLOW_SENDGRID_BASE_URL", "https://api.sendgrid.com",
                        "SendGrid API host (https://api.eu.sendgrid.com for EU subusers).")
    email_from: str | None = env("EVENTFLOW_EMAIL_FROM", None,
                                 "Sender address for email (required with sendgrid and smtp).")
    email_from_name: str = env("EVENTFLOW_EMAIL_FROM_NAME", "", "Sender display name for email.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_SENDGRID_RATE_PER_SECOND", 100.0,
                                         "SendGrid calls per second across all workers (Temporal's limit on the "
                                         "email send queue); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_SENDGRID_BURST", 100, "SendGrid token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "SENDGRID_API_KEY")


class SmtpSettings(SettingsGroup):
    """The SMTP email provider (the sender is EVENTFLOW_EMAIL_FROM and EVENTFLOW_EMAIL_FROM_NAME)."""

    concern: ClassVar[str] = "channels"

    host: str = env("EVENTFLOW_SMTP_HOST", "", "SMTP server host (required with smtp).")
    port: Port = env("EVENTFLOW_SMTP_PORT", 587, "SMTP server port: 587 for starttls, 465 for tls.")
    security: SmtpSecurityMode = env("EVENTFLOW_SMTP_SECURITY", "starttls",
                                     "starttls (upgrade, refused if the server cannot), tls (TLS from the first "
                                     "byte) or none (a local relay only).")
    username: str = env("EVENTFLOW_SMTP_USERNAME", "", "SMTP user name; empty for no AUTH.")
    password: SecretStr | None = env("EVENTFLOW_SMTP_PASSWORD", None,
                                     "SMTP password (or EVENTFLOW_SMTP_PASSWORD_FILE).")
    password_file: Path | None = env("EVENTFLOW_SMTP_PASSWORD_FILE", None,
                                     "File holding the SMTP password (a mounted secret).")
    ca_file: Path | None = env("EVENTFLOW_SMTP_CA_FILE", None,
                               "CA bundle to trust for the SMTP server instead of the system's.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_SMTP_RATE_PER_SECOND", 10.0,
                                         "SMTP messages per second across all workers (Temporal's limit on the "
                                         "email send queue); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_SMTP_BURST", 10, "SMTP token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_SMTP_PASSWORD")


class TwilioSettings(SettingsGroup):
    """The Twilio SMS and WhatsApp provider."""

    concern: ClassVar[str] = "channels"

    account_sid: str | None = env("TWILIO_ACCOUNT_SID", None, "Twilio account SID.")
    auth_token: SecretStr | None = env("TWILIO_AUTH_TOKEN", None, "Twilio auth token (or TWILIO_AUTH_TOKEN_FILE).")
    auth_token_file: Path | None = env("TWILIO_AUTH_TOKEN_FILE", None,
                                       "File holding the Twilio auth token (a mounted secret).")
    base_url: str = env("EVENTFLOW_TWILIO_BASE_URL", "",
                        "Twilio API base URL override (default https://api.twilio.com).")
    region: str = env("EVENTFLOW_TWILIO_REGION", "", "Twilio region (e.g. ie1) for regional processing.")
    edge: str = env("EVENTFLOW_TWILIO_EDGE", "", "Twilio edge location (e.g. dublin).")
    sms_from: str = env("EVENTFLOW_SMS_FROM", "", "Sender number for SMS.")
    whatsapp_from: str = env("EVENTFLOW_WHATSAPP_FROM", "", "Sender number for WhatsApp (whatsapp: prefix optional).")
    messaging_service_sid: str = env("EVENTFLOW_TWILIO_MESSAGING_SERVICE_SID", "",
                                     "Send through this Messaging Service instead of a number.")
    rate_per_second: PositiveFloat = env("EVENTFLOW_TWILIO_RATE_PER_SECOND", 10.0,
                                         "Twilio calls per second across all workers, per channel send queue "
                                         "(Temporal's limit); each worker's token bucket also holds it.")
    burst: PositiveInt = env("EVENTFLOW_TWILIO_BURST", 10, "Twilio token bucket size.")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "TWILIO_AUTH_TOKEN")


# -- webhooks ---------------------------------------------------------------------------------------

#: Prefix of the environment variables that hold webhook Secrets (``WEBHOOK_SECRET_CRM_TOKEN`` is ``crm_token``).
WEBHOOK_SECRET_PREFIX = "WEBHOOK_SECRET_"


class WebhookStepSettings(SettingsGroup):
    """Where ``webhook`` steps may call, and where their Secrets are."""

    concern: ClassVar[str] = "webhook steps"

    allowed_hosts: Csv = env("EVENTFLOW_WEBHOOK_ALLOWED_HOSTS", (),
                             "Hosts webhook steps may call, comma-separated: `host` (exact name, port 443 for https, "
                             "80 for http) or `host:port`; none when unset.")
    secrets_dir: Path | None = env("EVENTFLOW_WEBHOOK_SECRETS_DIR", None,
                                   "Folder of mounted webhook Secrets, one file per name; else WEBHOOK_SECRET_{NAME} variables.")
    secret_hosts: SecretHosts = env("EVENTFLOW_WEBHOOK_SECRET_HOSTS", {},
                                    "Where each webhook Secret may be sent: `crm_token=crm.example.com crm.example.com:8443,"
                                    "other=host` (hosts as in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS, space-separated); a "
                                    "Secret not listed is never sent.")
    max_saved_bytes: PositiveInt = env("EVENTFLOW_WEBHOOK_MAX_SAVED_BYTES", 16384,
                                       "Largest response (compact JSON) a webhook step's save_as keeps; a larger one "
                                       "fails the step (WebhookSavedTooLarge) and nothing is saved.")
    allow_loopback: bool = env("EVENTFLOW_WEBHOOK_ALLOW_LOOPBACK", False,
                               "Test and development only: let webhook steps call loopback addresses (127.0.0.0/8, "
                               "::1). Private, link-local and other non-public addresses are refused regardless.")


def webhook_secret_environ(environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """Webhook Secrets given as ``WEBHOOK_SECRET_<NAME>`` variables, by lower-case name."""
    env = os.environ if environ is None else environ
    return {name.removeprefix(WEBHOOK_SECRET_PREFIX).lower(): SecretStr(value)
            for name, value in env.items() if name.startswith(WEBHOOK_SECRET_PREFIX) and value}


# -- codec server -----------------------------------------------------------------------------------

#: The shortest bearer token the codec server starts with (a guessable token is a decryption oracle).
CODEC_SERVER_MIN_TOKEN_CHARS = 32


class CodecServerSettings(SettingsGroup):
    """``eventflow codec-server``: the Temporal Web UI's and CLI's codec endpoint (it decrypts payloads)."""

    concern: ClassVar[str] = "codec server"

    port: Port = env("EVENTFLOW_CODEC_SERVER_PORT", 8888, "Port of the codec server (/encode, /decode, /healthz).")
    token: SecretStr | None = env("EVENTFLOW_CODEC_SERVER_TOKEN", None, "Bearer token every /encode and /decode "
                                  "request must carry (required, at least 32 characters; or EVENTFLOW_CODEC_SERVER_TOKEN_FILE).")
    token_file: Path | None = env("EVENTFLOW_CODEC_SERVER_TOKEN_FILE", None,
                                  "File holding the codec server's bearer token (a mounted secret).")
    cors_origins: Csv = env("EVENTFLOW_CODEC_SERVER_CORS_ORIGINS", ("http://localhost:8233",),
                            "Comma-separated origins of the Temporal Web UI allowed to call the codec server.")
    max_body_bytes: PositiveInt = env("EVENTFLOW_CODEC_SERVER_MAX_BODY_BYTES", 4 * 1024 * 1024,
                                      "Largest request body accepted (413 above).")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_CODEC_SERVER_TOKEN")

    @model_validator(mode="after")
    def _token_required(self) -> Self:
        variable = self.variable("token_file" if self.token_file else "token")
        if self.token is None or not self.token.get_secret_value():
            raise ConfigError(variable, "is required: the codec server decrypts customer data")
        if len(self.token.get_secret_value()) < CODEC_SERVER_MIN_TOKEN_CHARS:
            raise ConfigError(variable, f"is shorter than {CODEC_SERVER_MIN_TOKEN_CHARS} characters: the codec "
                                        "server decrypts customer data (generate one with `openssl rand -hex 32`)")
        return self


# -- webhooks ---------------------------------------------------------------------------------------

class WebhookUrlSettings(SettingsGroup):
    """Where providers reach `eventflow webhooks`: the worker asks for callbacks there, the service checks."""

    concern: ClassVar[str] = "webhooks"

    public_url: str = env("EVENTFLOW_WEBHOOKS_PUBLIC_URL", "",
                          "Externally visible base URL of `eventflow webhooks` (`https://hooks.example.com`): the "
                          "worker sends Twilio status callbacks there, the service checks Twilio signatures "
                          "against it. Empty: no status callbacks.")

    @model_validator(mode="after")
    def _absolute(self) -> Self:
        if self.public_url and not re.match(r"^https?://[^/]+", self.public_url):
            raise ConfigError(self.variable("public_url"), "must be an absolute http(s) URL")
        return self


class WebhookSettings(SettingsGroup):
    """The webhook service: its port, bounds, the feedback topic and the SendGrid verification key."""

    concern: ClassVar[str] = "webhooks"

    port: Port = env("EVENTFLOW_WEBHOOKS_PORT", 8080, "Port the provider webhooks are served on.")
    feedback_topic: str = env("EVENTFLOW_FEEDBACK_TOPIC", "delivery-feedback",
                              "Kafka topic the webhook service hands verified reports to.")
    feedback_group: str = env("EVENTFLOW_FEEDBACK_CONSUMER_GROUP", "eventflow-feedback",
                              "Consumer group that applies the feedback topic to the ledger and the journeys.")
    sendgrid_verification_key: SecretStr | None = env(
        "SENDGRID_WEBHOOK_VERIFICATION_KEY", None,
        "SendGrid Event Webhook verification key (base64 public key; or SENDGRID_WEBHOOK_VERIFICATION_KEY_FILE). "
        "Unset: SendGrid events are refused.")
    sendgrid_verification_key_file: Path | None = env("SENDGRID_WEBHOOK_VERIFICATION_KEY_FILE", None,
                                                      "File holding the SendGrid verification key.")
    replay_window_seconds: PositiveFloat = env("EVENTFLOW_WEBHOOKS_REPLAY_WINDOW_SECONDS", 300.0,
                                               "SendGrid requests whose signed timestamp is further than this "
                                               "from now are refused (replays).")
    max_body_bytes: PositiveInt = env("EVENTFLOW_WEBHOOKS_MAX_BODY_BYTES", 1_048_576,
                                      "Largest webhook body accepted (413 above).")
    request_deadline_seconds: PositiveFloat = env("EVENTFLOW_WEBHOOKS_REQUEST_DEADLINE_SECONDS", 10.0,
                                                  "Deadline of one webhook request, hand-off included.")
    max_connections: PositiveInt = env("EVENTFLOW_WEBHOOKS_MAX_CONNECTIONS", 256,
                                       "Open webhook connections at most; the next one is answered 503.")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "SENDGRID_WEBHOOK_VERIFICATION_KEY")


# -- per-process compositions -----------------------------------------------------------------------

#: The ops port a process binds when EVENTFLOW_METRICS_PORT is unset (the field's default otherwise):
#: distinct, so a consumer, a worker and the webhook service run side by side on one host without
#: configuration (the worker's SDK exporter holds 9465). A pod sets the variable (the chart does).
DEFAULT_METRICS_PORTS: Mapping[Process, int] = {Process.WORKER: 9466, Process.WEBHOOKS: 9467}


def _ops(process: Process, environ: Mapping[str, str]) -> OpsSettings:
    ops = OpsSettings.load(environ)
    default = DEFAULT_METRICS_PORTS.get(process)
    if default is None or "metrics_port" in ops.model_fields_set:
        return ops
    return ops.model_copy(update={"metrics_port": default})


@dataclass(frozen=True)
class Settings:
    """Kafka, Temporal, the drain bounds, ops and logging: what the consumer and the commands share."""

    kafka: KafkaSettings
    temporal: TemporalSettings
    consumer: ConsumerSettings
    metrics_port: int
    log_format: str


@dataclass(frozen=True)
class ConsumerProcessSettings:
    """``eventflow consume``."""

    core: Settings
    registry: SchemaRegistrySettings
    events: EventSettings
    journeys: JourneySettings
    tracing: TracingSettings
    catalog: CatalogSettings = dataclass_field(default_factory=CatalogSettings)
    database: DatabaseSettings = dataclass_field(default_factory=DatabaseSettings)


@dataclass(frozen=True)
class WorkerProcessSettings:
    """``eventflow worker``: no Kafka settings, it never talks to Kafka."""

    temporal: TemporalSettings
    consumer: ConsumerSettings
    ops: OpsSettings
    worker: WorkerSettings
    channels: ChannelSettings
    sendgrid: SendGridSettings
    twilio: TwilioSettings
    journeys: JourneySettings
    tracing: TracingSettings
    catalog: CatalogSettings = dataclass_field(default_factory=CatalogSettings)
    smtp: SmtpSettings = dataclass_field(default_factory=SmtpSettings)
    #: Read only when the catalog source is kafka (the worker follows the catalog topic then).
    kafka: KafkaSettings | None = None
    webhook_steps: WebhookStepSettings = dataclass_field(default_factory=WebhookStepSettings)
    webhook_url: WebhookUrlSettings = WebhookUrlSettings()
    database: DatabaseSettings = dataclass_field(default_factory=DatabaseSettings)


@dataclass(frozen=True)
class WebhooksProcessSettings:
    """``eventflow webhooks``: the receiver (Kafka producer) and the feedback consumer (Kafka to Temporal)."""

    kafka: KafkaSettings
    temporal: TemporalSettings
    consumer: ConsumerSettings
    ops: OpsSettings
    webhooks: WebhookSettings
    webhook_url: WebhookUrlSettings
    twilio: TwilioSettings
    tracing: TracingSettings
    database: DatabaseSettings = dataclass_field(default_factory=DatabaseSettings)


@dataclass(frozen=True)
class ToolSettings:
    """The other ``eventflow`` commands (produce, dlq, schemas, journeys, temporal setup, dev)."""

    core: Settings
    registry: SchemaRegistrySettings
    events: EventSettings
    journeys: JourneySettings
    tracing: TracingSettings
    catalog: CatalogSettings = dataclass_field(default_factory=CatalogSettings)
    database: DatabaseSettings = dataclass_field(default_factory=DatabaseSettings)
    webhook_steps: WebhookStepSettings = dataclass_field(default_factory=WebhookStepSettings)


@dataclass(frozen=True)
class CodecServerProcessSettings:
    """``eventflow codec-server``: the keys (with the namespace it serves), its own HTTP settings, logging."""

    temporal: TemporalSettings
    server: CodecServerSettings
    ops: OpsSettings


PROCESSES: Mapping[Process, type] = {
    Process.CONSUMER: ConsumerProcessSettings, Process.WORKER: WorkerProcessSettings, Process.CLI: ToolSettings,
    Process.CODEC_SERVER: CodecServerProcessSettings, Process.WEBHOOKS: WebhooksProcessSettings}


def groups(process: Process) -> tuple[type[SettingsGroup], ...]:
    """The settings classes ``process`` reads, read off its composition's field types.

    A `Settings` field stands for Kafka, Temporal, consumer and ops settings; every process reads
    the dev stack's ports (its default addresses).
    """
    found: list[type[SettingsGroup]] = []
    for hint in get_type_hints(PROCESSES[process]).values():
        if hint is Settings:
            found += [KafkaSettings, TemporalSettings, ConsumerSettings, OpsSettings]
        elif isinstance(hint, type) and issubclass(hint, SettingsGroup):
            found.append(hint)
    return (*found, DevStackSettings)


def all_groups() -> tuple[type[SettingsGroup], ...]:
    """Every settings class some process reads, each once, in the order the compositions name them."""
    return tuple(dict.fromkeys(group for process in Process for group in groups(process)))


def variables(process: Process | None = None) -> frozenset[str]:
    """The variables ``process`` reads; every Eventflow process's when None."""
    chosen = all_groups() if process is None else groups(process)
    return frozenset(name for group in chosen for name in group.variables())


def check_unknown(environ: Mapping[str, str] | None = None) -> None:
    """Fails on an ``EVENTFLOW_*`` variable that no Eventflow process reads (librdkafka's pass through)."""
    known = variables()
    for name in os.environ if environ is None else environ:
        if name.startswith("EVENTFLOW_") and name not in known and not name.startswith(LIBRDKAFKA_PREFIX):
            raise ConfigError(name, "unknown Eventflow setting (see the configuration table in README.md)")


def _checked(environ: Mapping[str, str] | None, dev_defaults: bool) -> Mapping[str, str]:
    """The environment, checked for unknown variables, with the dev stack's addresses where unset."""
    env = os.environ if environ is None else environ
    check_unknown(env)
    if not dev_defaults:
        return env
    dev = DevStackSettings.load(env)
    defaults = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dev.kafka_port}",
                "TEMPORAL_ADDRESS": f"127.0.0.1:{dev.temporal_port}"}
    if not any(env.get(name) for name in defaults):
        # Only a process that runs wholly on the dev stack gets its database by default: one pointed at
        # other servers uses a customer store only when EVENTFLOW_DATABASE_URL names one.
        defaults[DatabaseSettings.variable("url")] = dev_database_url(dev.postgres_port)
    return {**defaults, **{name: value for name, value in env.items() if value}}


def load_settings(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> Settings:
    """Checks for unknown variables, then reads and validates the shared settings.

    Args:
        environ: the environment; ``os.environ`` by default.
        dev_defaults: when Kafka or Temporal addresses are unset, use the local dev stack's
            addresses instead of failing.
    """
    env = _checked(environ, dev_defaults)
    kafka = KafkaSettings.load(env)
    temporal = TemporalSettings.load(env)
    ops = OpsSettings.load(env)
    return Settings(kafka=kafka, temporal=temporal, consumer=ConsumerSettings.load(env),
                    metrics_port=ops.metrics_port, log_format=ops.log_format)


def load_consumer(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> ConsumerProcessSettings:
    """Everything ``eventflow consume`` reads, validated at once."""
    env = _checked(environ, dev_defaults)
    return ConsumerProcessSettings(core=load_settings(env, dev_defaults=False), registry=SchemaRegistrySettings.load(env),
                                   events=EventSettings.load(env), journeys=JourneySettings.load(env),
                                   tracing=TracingSettings.load(env), catalog=CatalogSettings.load(env),
                                   database=DatabaseSettings.load(env))


def load_worker(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> WorkerProcessSettings:
    """Everything ``eventflow worker`` reads, validated at once (secret files included)."""
    env = _checked(environ, dev_defaults)
    return WorkerProcessSettings(temporal=TemporalSettings.load(env), consumer=ConsumerSettings.load(env),
                                 ops=_ops(Process.WORKER, env), worker=WorkerSettings.load(env),
                                 channels=ChannelSettings.load(env), sendgrid=SendGridSettings.load(env),
                                 twilio=TwilioSettings.load(env), journeys=JourneySettings.load(env),
                                 tracing=TracingSettings.load(env), catalog=(catalog := CatalogSettings.load(env)),
                                 webhook_steps=WebhookStepSettings.load(env),
                                 kafka=KafkaSettings.load(env) if catalog.source == "kafka" else None,
                                 webhook_url=WebhookUrlSettings.load(env), database=DatabaseSettings.load(env),
                                 smtp=SmtpSettings.load(env))


def load_webhooks(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> WebhooksProcessSettings:
    """Everything ``eventflow webhooks`` reads, validated at once (secret files included)."""
    env = _checked(environ, dev_defaults)
    return WebhooksProcessSettings(kafka=KafkaSettings.load(env), temporal=TemporalSettings.load(env),
                                   consumer=ConsumerSettings.load(env), ops=_ops(Process.WEBHOOKS, env),
                                   webhooks=WebhookSettings.load(env), webhook_url=WebhookUrlSettings.load(env),
                                   twilio=TwilioSettings.load(env), tracing=TracingSettings.load(env),
                                   database=DatabaseSettings.load(env))


def worker_settings_from(settings: Settings, environ: Mapping[str, str] | None = None) -> WorkerProcessSettings:
    """The worker's settings around already loaded shared `Settings` (its own read from ``environ``)."""
    own = load_worker(environ)
    return replace(own, temporal=settings.temporal, consumer=settings.consumer,
                   ops=OpsSettings(metrics_port=settings.metrics_port, log_format=cast(LogFormat, settings.log_format)))


def load_tools(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> ToolSettings:
    """What the other commands read."""
    env = _checked(environ, dev_defaults)
    return ToolSettings(core=load_settings(env, dev_defaults=False), registry=SchemaRegistrySettings.load(env),
                        events=EventSettings.load(env), journeys=JourneySettings.load(env),
                        tracing=TracingSettings.load(env), catalog=CatalogSettings.load(env),
                        webhook_steps=WebhookStepSettings.load(env), database=DatabaseSettings.load(env))


def load_codec_server(environ: Mapping[str, str] | None = None, *,
                      dev_defaults: bool = True) -> CodecServerProcessSettings:
    """What ``eventflow codec-server`` reads; it needs payload keys and a bearer token."""
    env = _checked(environ, dev_defaults)
    temporal = TemporalSettings.load(env)
    if temporal.payload_keys is None:
        raise ConfigError(TemporalSettings.variable("payload_keys"), "is required: the codec server has no key")
    return CodecServerProcessSettings(temporal=temporal, server=CodecServerSettings.load(env), ops=OpsSettings.load(env))


def check_value(variable: str, raw: str) -> None:
    """Checks one variable's value with its field's own type and validators (cross-field rules aside).

    Raises:
        ConfigError: the variable is unknown, or the value invalid.
    """
    for group in all_groups():
        field = group.variables().get(variable)
        if field is None:
            continue
        info = group.model_fields[field]
        definition: dict[str, Any] = {field: (info.annotation, info)}
        alone = create_model(f"{group.__name__}_{field}", **definition)
        try:
            alone.model_validate({variable: raw})
        except ValidationError as exc:
            problem = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ConfigError(variable, f"invalid value {raw!r}: {problem}") from None
        return
    raise ConfigError(variable, "unknown Eventflow setting (see the configuration table in README.md)")


# -- the README table -------------------------------------------------------------------------------

def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in _non_none(field.annotation)


def _non_none(annotation: object) -> tuple[object, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(arg for arg in get_args(annotation) if arg is not type(None))
    return (annotation,)


def _type_name(field: FieldInfo) -> str:
    (annotation, *_) = _non_none(field.annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin is tuple:
        return "csv"
    if origin is dict:
        return "mapping"
    names = {bool: "bool", int: "int", float: "float", str: "str", Path: "path", SecretStr: "secret"}
    return names.get(annotation, "str") if isinstance(annotation, type) else "str"


def _default(field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined or default is None or default in ("", {}, ()):
        return "—"
    shown = ",".join(default) if isinstance(default, tuple) else str(default)
    return f"`{shown}`"


def _rows() -> Iterator[tuple[str, str, str, str, str, str]]:
    for group in all_groups():
        readers = ", ".join(p.value for p in Process if group in groups(p))
        for variable, name in group.variables().items():
            field = group.model_fields[name]
            yield group.concern, variable, _type_name(field), _default(field), readers, field.description or ""


def markdown_table() -> str:
    """The README's configuration table, generated from the settings classes."""
    rows = ["| Concern | Variable | Type | Default | Read by | Meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for concern, variable, type_name, default, readers, doc in _rows():
        rows.append(f"| {concern} | `{variable}` | {type_name} | {default} | {readers} | {doc} |")
    readers = ", ".join(p.value for p in Process if KafkaSettings in groups(p))  # the pass-through is Kafka's
    rows.append(f"| kafka | `{LIBRDKAFKA_PREFIX}*` | str | — | {readers} | Passed to librdkafka: "
                f"`{LIBRDKAFKA_PREFIX}SASL_MECHANISM` sets `sasl.mechanism`. |")
    return "\n".join(rows)


__all__ = [
    "CatalogSettings", "ChannelSettings", "CodecServerProcessSettings", "CodecServerSettings",
    "ConsumerProcessSettings", "ConsumerSettings", "DEFAULT_METRICS_PORTS", "DevStackSettings", "Encoding",
    "EventSettings", "JourneySettings", "KafkaSettings", "LIBRDKAFKA_PREFIX", "OpsSettings", "PROCESSES", "Process",
    "SchemaRegistrySettings", "SendGridSettings", "Settings", "SettingsGroup", "SmtpSettings", "SubjectStrategy",
    "TemporalSettings",
    "ToolSettings", "TwilioSettings", "WEBHOOK_SECRET_PREFIX", "WebhookStepSettings", "WorkerProcessSettings",
    "WorkerSettings", "all_groups", "check_unknown", "webhook_secret_environ",
    "check_value", "dev_database_url", "groups", "librdkafka_overrides", "librdkafka_variable", "load_codec_server", "load_consumer", "load_settings",
    "load_tools",
    "load_worker", "markdown_table", "variables", "worker_settings_from",
    "WebhookSettings", "WebhookUrlSettings", "WebhooksProcessSettings", "load_webhooks",
]
