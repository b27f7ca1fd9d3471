"""Where the servers are: Kafka (and librdkafka pass-through), Temporal, the customer store, the dev stack, the drain bounds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from core.codec import Keyring, KeyringError
from core.errors import ConfigError
from core.settings._base import (
    LIBRDKAFKA_PREFIX,
    Csv,
    NonNegativeInt,
    Port,
    PositiveFloat,
    PositiveInt,
    SettingsGroup,
    _secret_from_file,
    env,
)
from core.signing import SigningKeys, SigningKeysError

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
    segment_refresh_seconds: PositiveFloat = env(
        "EVENTFLOW_SEGMENT_REFRESH_SECONDS", 300.0,
        "How often one consumer re-evaluates every customer's segments (conditions the clock alone changes).")
    customer_events_retention_days: PositiveInt = env(
        "EVENTFLOW_CUSTOMER_EVENTS_RETENTION_DAYS", 366,
        "Days the events segments read are kept (`customer_events`); the refreshing consumer prunes older ones "
        "after each full refresh, keeping each customer's newest of a type. A segment may not count events over "
        "a longer window (`journeys validate` refuses it), and a followed segment's longer count window wins.")


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


# -- address hashes ---------------------------------------------------------------------------------

class AddressHashSettings(SettingsGroup):
    """The keys that hash contact addresses (docs/architecture.md, "Keyed address hashes")."""

    concern: ClassVar[str] = "privacy"

    keys: SecretStr | None = env("EVENTFLOW_ADDRESS_HASH_KEYS", None,
                                 "HMAC-SHA256 keys that name contact addresses in suppressions, STOPs and "
                                 "address links, as `id=base64,id=base64` (32+ bytes each, `openssl rand "
                                 "-base64 32`); unset: unkeyed SHA-256, recoverable by guessing (development).")
    keys_file: Path | None = env("EVENTFLOW_ADDRESS_HASH_KEYS_FILE", None,
                                 "File holding the address hash keys, one `id=base64` a line (a mounted Secret); "
                                 "wins over EVENTFLOW_ADDRESS_HASH_KEYS.")
    key_id: str | None = env("EVENTFLOW_ADDRESS_HASH_KEY_ID", None,
                             "Id of the key new address hashes are made with (lookups try every key); optional "
                             "with one key.")
    legacy_reads: bool = env("EVENTFLOW_ADDRESS_HASH_LEGACY_READS", True,
                             "Lookups also try the unkeyed hashes written before keys were configured, so older "
                             "suppressions and STOPs keep working; turn off once none are left.")
    keys_required: bool = env("EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED", False,
                              "Refuse to start without address hash keys (the Helm chart sets it outside "
                              "development mode: unkeyed hashes can be reversed by guessing).")

    @model_validator(mode="before")
    @classmethod
    def _keys_from_file(cls, data: object) -> object:
        return _secret_from_file(data, "EVENTFLOW_ADDRESS_HASH_KEYS")

    @model_validator(mode="after")
    def _keys_valid(self) -> Self:
        variable = self.variable("keys_file" if self.keys_file else "keys")
        if self.keys is None:
            if self.keys_required:
                raise ConfigError(variable, "is required (EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED=true: unkeyed "
                                  "address hashes can be reversed by guessing)")
            if self.key_id is not None:
                raise ConfigError(self.variable("key_id"), "is set but no address hash keys are")
            return self
        try:
            self.hash_keys()
        except SigningKeysError as exc:
            raise ConfigError(self.variable("key_id") if exc.signing_key_id else variable, str(exc)) from None
        return self

    def hash_keys(self) -> SigningKeys | None:
        """The keys by id with the current one, or None (unkeyed hashes, development).

        Raises:
            SigningKeysError: when the keys are unusable (`load` has checked them already).
        """
        if self.keys is None:
            return None
        return SigningKeys.parse(self.keys.get_secret_value(), self.key_id)


# -- dev stack --------------------------------------------------------------------------------------

class DevStackSettings(SettingsGroup):
    """The local stack's ports (the processes' default addresses) and the cache folder."""

    concern: ClassVar[str] = "dev stack"

    kafka_port: Port = env("EVENTFLOW_DEV_KAFKA_PORT", 19092, "Dev stack Kafka port (controller uses port+1).")
    temporal_port: Port = env("EVENTFLOW_DEV_TEMPORAL_PORT", 7233, "Dev stack Temporal frontend port.")
    temporal_ui_port: Port = env("EVENTFLOW_DEV_TEMPORAL_UI_PORT", 8233, "Dev stack Temporal Web UI port.")
    postgres_port: Port = env("EVENTFLOW_DEV_POSTGRES_PORT", 15432, "Dev stack PostgreSQL port (the customer store).")
    push_port: Port = env("EVENTFLOW_DEV_PUSH_PORT", 8095, "Port of the local Web Push service "
                          "(`eventflow dev push-service`); its subscriptions' endpoints name it.")
    smtp_port: Port = env("EVENTFLOW_DEV_SMTP_PORT", 2525, "Port of the local SMTP server (`eventflow dev mail-server`).")
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


