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

Each concern's groups live in a module of this package (`connections`, `ops`, `contracts`,
`sending`, `services`; the machinery in `_base`), re-exported here. Each process's composition
is in `eventflow.settings`, beside the processes. Only `_base` reads ``os.environ`` (`SettingsGroup.load`);
the README's configuration table is generated from the classes (``eventflow config --update-readme``).
"""


from __future__ import annotations

from core.settings._base import (
    LIBRDKAFKA_PREFIX,
    CapsSpec,
    CatalogSource,
    Csv,
    EmailProvider,
    Encoding,
    EncodingMap,
    HeaderMap,
    LogFormat,
    MessagingProvider,
    NonNegativeInt,
    PhoneRegion,
    Port,
    PositiveFloat,
    PositiveInt,
    Process,
    QuietHours,
    Ratio,
    SecretHosts,
    SettingsGroup,
    SmtpSecurityMode,
    SubjectStrategy,
    UncertainDeliveryPolicy,
    UpstreamSampling,
    env,
)
from core.settings.connections import (
    LIBRDKAFKA_FILE_PROPERTIES,
    AddressHashSettings,
    ConsumerSettings,
    DatabaseSettings,
    DevStackSettings,
    KafkaSettings,
    TemporalSettings,
    dev_database_url,
    librdkafka_overrides,
    librdkafka_variable,
)
from core.settings.contracts import (
    CatalogSettings,
    EventSettings,
    JourneySettings,
    SchemaRegistrySettings,
)
from core.settings.ops import (
    OpsSettings,
    TracingSettings,
)
from core.settings.sending import (
    WEBHOOK_SECRET_PREFIX,
    ChannelSettings,
    FcmSettings,
    SendGridSettings,
    SmtpSettings,
    TwilioSettings,
    WebhookStepSettings,
    WebPushSettings,
    WorkerSettings,
    webhook_secret_environ,
)
from core.settings.services import (
    CODEC_SERVER_MIN_TOKEN_CHARS,
    PREFERENCES_MIN_API_TOKEN_CHARS,
    CodecServerSettings,
    PreferenceCenterSettings,
    PreferenceLinkSettings,
    WebhookSettings,
    WebhookUrlSettings,
)

__all__ = [
    "AddressHashSettings",
    "CODEC_SERVER_MIN_TOKEN_CHARS",
    "CapsSpec",
    "CatalogSettings",
    "CatalogSource",
    "ChannelSettings",
    "CodecServerSettings",
    "ConsumerSettings",
    "Csv",
    "DatabaseSettings",
    "DevStackSettings",
    "EmailProvider",
    "Encoding",
    "EncodingMap",
    "EventSettings",
    "FcmSettings",
    "HeaderMap",
    "JourneySettings",
    "KafkaSettings",
    "LIBRDKAFKA_FILE_PROPERTIES",
    "LIBRDKAFKA_PREFIX",
    "LogFormat",
    "MessagingProvider",
    "NonNegativeInt",
    "OpsSettings",
    "PREFERENCES_MIN_API_TOKEN_CHARS",
    "PhoneRegion",
    "Port",
    "PositiveFloat",
    "PreferenceCenterSettings",
    "PreferenceLinkSettings",
    "PositiveInt",
    "Process",
    "QuietHours",
    "Ratio",
    "SchemaRegistrySettings",
    "SecretHosts",
    "SendGridSettings",
    "SettingsGroup",
    "SmtpSecurityMode",
    "SmtpSettings",
    "SubjectStrategy",
    "TemporalSettings",
    "TracingSettings",
    "TwilioSettings",
    "UncertainDeliveryPolicy",
    "UpstreamSampling",
    "WEBHOOK_SECRET_PREFIX",
    "WebhookSettings",
    "WebhookStepSettings",
    "WebhookUrlSettings",
    "WebPushSettings",
    "WorkerSettings",
    "dev_database_url",
    "env",
    "librdkafka_overrides",
    "librdkafka_variable",
    "webhook_secret_environ",
]
