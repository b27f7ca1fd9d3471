"""The settings machinery: typed fields bound to variables, one class per concern, one-line errors.

Every group below subclasses `SettingsGroup`; ``load`` is the only place that reads the environment.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from core.errors import ConfigError
from core.vocabulary import CHANNELS

LIBRDKAFKA_PREFIX = "EVENTFLOW_LIBRDKAFKA_"

# Vocabularies. `events.codec.Encoding` and `events.registry.SubjectStrategy` are these (a test checks).
Encoding = Literal["auto", "registry", "embedded", "json"]
SubjectStrategy = Literal["topic", "record", "topic_record"]
LogFormat = Literal["json", "console"]
EmailProvider = Literal["outbox", "sendgrid", "smtp"]
SmtpSecurityMode = Literal["starttls", "tls", "none"]
MessagingProvider = Literal["outbox", "twilio"]
PushProvider = Literal["outbox", "fcm"]
WebPushProvider = Literal["outbox", "webpush"]
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
        raise ValueError(f"must look like email:day=2,week=5;all:month=20 (scopes {', '.join((*CHANNELS, 'all'))}; "
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
    PREFERENCES = "preferences"


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


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in _non_none(field.annotation)


def _non_none(annotation: object) -> tuple[object, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(arg for arg in get_args(annotation) if arg is not type(None))
    return (annotation,)
