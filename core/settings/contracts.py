"""Event contracts and journeys: the schema registry, encodings, the journeys folder and the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import SecretStr, model_validator

from core.errors import ConfigError
from core.settings._base import (
    CatalogSource,
    Encoding,
    EncodingMap,
    PositiveFloat,
    SettingsGroup,
    SubjectStrategy,
    _secret_from_file,
    env,
)
from core.signing import SigningKeys, SigningKeysError

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
                                "files: the journeys folder (and its audiences/ segments), read at start; kafka: "
                                "the catalog topic, followed live (`eventflow journeys publish`, `eventflow "
                                "segments publish`); the worker then reads the Kafka settings too.")
    topic: str = env("EVENTFLOW_CATALOG_TOPIC", "eventflow.journeys",
                     "Compacted one-partition topic of journey and segment catalog entries.")
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


