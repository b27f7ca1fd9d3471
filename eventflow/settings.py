"""Each process's settings: the groups it reads, composed and validated once at start-up.

A process loads its composition (`load_consumer`, `load_worker`, `load_webhooks`, `load_tools`,
`load_codec_server`, `load_preferences`) once; an ``EVENTFLOW_*`` variable no process reads is an error
(`check_unknown`), judged against every process's groups, so one shared ConfigMap may carry the
consumer's and the worker's settings. The README's table is generated from the same compositions
(``eventflow config --update-readme``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any, cast, get_type_hints

from pydantic import ValidationError, create_model

from core.errors import ConfigError
from core.settings import (
    LIBRDKAFKA_PREFIX,
    AddressHashSettings,
    CatalogSettings,
    ChannelSettings,
    CodecServerSettings,
    ConsumerSettings,
    DatabaseSettings,
    DevStackSettings,
    EventSettings,
    FcmSettings,
    JourneySettings,
    KafkaSettings,
    LogFormat,
    OpsSettings,
    PreferenceCenterSettings,
    PreferenceLinkSettings,
    Process,
    SchemaRegistrySettings,
    SendGridSettings,
    SettingsGroup,
    SmtpSettings,
    TemporalSettings,
    TracingSettings,
    TwilioSettings,
    WebhookSettings,
    WebhookStepSettings,
    WebhookUrlSettings,
    WebPushSettings,
    WorkerSettings,
    dev_database_url,
)
from core.settings.table import settings_table

# -- per-process compositions -----------------------------------------------------------------------

#: The ops port a process binds when EVENTFLOW_METRICS_PORT is unset (the field's default otherwise):
#: distinct, so a consumer, a worker and the webhook service run side by side on one host without
#: configuration (the worker's SDK exporter holds 9465). A pod sets the variable (the chart does).
DEFAULT_METRICS_PORTS: Mapping[Process, int] = {Process.WORKER: 9466, Process.WEBHOOKS: 9467, Process.PREFERENCES: 9468}


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
    addresses: AddressHashSettings = dataclass_field(default_factory=AddressHashSettings)
    #: The providers' names and development mode only (no secrets): catalog journeys on a channel no
    #: provider serves are refused (`consumer.catalog_channels`).
    channels: ChannelSettings = dataclass_field(default_factory=ChannelSettings)


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
    addresses: AddressHashSettings = dataclass_field(default_factory=AddressHashSettings)
    preference_links: PreferenceLinkSettings = dataclass_field(default_factory=PreferenceLinkSettings)
    fcm: FcmSettings = dataclass_field(default_factory=FcmSettings)
    webpush: WebPushSettings = dataclass_field(default_factory=WebPushSettings)


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
    addresses: AddressHashSettings = dataclass_field(default_factory=AddressHashSettings)


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
    addresses: AddressHashSettings = dataclass_field(default_factory=AddressHashSettings)
    #: For ``journeys publish``: a journey on a channel no provider serves is refused.
    channels: ChannelSettings = dataclass_field(default_factory=ChannelSettings)


@dataclass(frozen=True)
class CodecServerProcessSettings:
    """``eventflow codec-server``: the keys (with the namespace it serves), its own HTTP settings, logging."""

    temporal: TemporalSettings
    server: CodecServerSettings
    ops: OpsSettings


@dataclass(frozen=True)
class PreferencesProcessSettings:
    """``eventflow preferences``: the link keys, its own HTTP settings, the store, the topics (journeys folder)."""

    links: PreferenceLinkSettings
    server: PreferenceCenterSettings
    ops: OpsSettings
    database: DatabaseSettings
    journeys: JourneySettings


PROCESSES: Mapping[Process, type] = {
    Process.CONSUMER: ConsumerProcessSettings, Process.WORKER: WorkerProcessSettings, Process.CLI: ToolSettings,
    Process.CODEC_SERVER: CodecServerProcessSettings, Process.WEBHOOKS: WebhooksProcessSettings,
    Process.PREFERENCES: PreferencesProcessSettings}


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
                                   database=DatabaseSettings.load(env), addresses=AddressHashSettings.load(env),
                                   channels=ChannelSettings.load(env))


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
                                 smtp=SmtpSettings.load(env), addresses=AddressHashSettings.load(env),
                                 preference_links=PreferenceLinkSettings.load(env), fcm=FcmSettings.load(env),
                                 webpush=WebPushSettings.load(env))


def load_webhooks(environ: Mapping[str, str] | None = None, *, dev_defaults: bool = True) -> WebhooksProcessSettings:
    """Everything ``eventflow webhooks`` reads, validated at once (secret files included)."""
    env = _checked(environ, dev_defaults)
    return WebhooksProcessSettings(kafka=KafkaSettings.load(env), temporal=TemporalSettings.load(env),
                                   consumer=ConsumerSettings.load(env), ops=_ops(Process.WEBHOOKS, env),
                                   webhooks=WebhookSettings.load(env), webhook_url=WebhookUrlSettings.load(env),
                                   twilio=TwilioSettings.load(env), tracing=TracingSettings.load(env),
                                   database=DatabaseSettings.load(env), addresses=AddressHashSettings.load(env))


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
                        webhook_steps=WebhookStepSettings.load(env), database=DatabaseSettings.load(env),
                        addresses=AddressHashSettings.load(env), channels=ChannelSettings.load(env))


def load_codec_server(environ: Mapping[str, str] | None = None, *,
                      dev_defaults: bool = True) -> CodecServerProcessSettings:
    """What ``eventflow codec-server`` reads; it needs payload keys and a bearer token."""
    env = _checked(environ, dev_defaults)
    temporal = TemporalSettings.load(env)
    if temporal.payload_keys is None:
        raise ConfigError(TemporalSettings.variable("payload_keys"), "is required: the codec server has no key")
    return CodecServerProcessSettings(temporal=temporal, server=CodecServerSettings.load(env), ops=OpsSettings.load(env))


def load_preferences(environ: Mapping[str, str] | None = None, *,
                     dev_defaults: bool = True) -> PreferencesProcessSettings:
    """What ``eventflow preferences`` reads; it needs the link keys and a customer store."""
    env = _checked(environ, dev_defaults)
    links = PreferenceLinkSettings.load(env)
    if links.signing_keys is None:
        raise ConfigError(PreferenceLinkSettings.variable("signing_keys"),
                          "is required: the preference center checks signed links")
    database = DatabaseSettings.load(env)
    if database.dsn() is None:
        raise ConfigError(DatabaseSettings.variable("url"), "is required: consent is kept in the customer store")
    return PreferencesProcessSettings(links=links, server=PreferenceCenterSettings.load(env),
                                      ops=_ops(Process.PREFERENCES, env), database=database,
                                      journeys=JourneySettings.load(env))


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



def markdown_table() -> str:
    """The README's configuration table, generated from the settings classes each process reads."""
    return settings_table(all_groups(), lambda group: [p.value for p in Process if group in groups(p)])


__all__ = [
    "CodecServerProcessSettings",
    "ConsumerProcessSettings",
    "PreferencesProcessSettings",
    "DEFAULT_METRICS_PORTS",
    "PROCESSES",
    "Process",
    "Settings",
    "ToolSettings",
    "WebhooksProcessSettings",
    "WorkerProcessSettings",
    "all_groups",
    "check_unknown",
    "check_value",
    "groups",
    "load_codec_server",
    "load_consumer",
    "load_preferences",
    "load_settings",
    "load_tools",
    "load_webhooks",
    "load_worker",
    "markdown_table",
    "variables",
    "worker_settings_from",
]
