"""How each topic's events are encoded (from `core.settings.EventSettings`), and the factories built on it.

``build_decoder(environ)`` is what the consumer calls; ``build_producer(...)`` is what
``eventflow produce`` and upstream services call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from core.settings import EventSettings, SchemaRegistrySettings
from events.codec import Encoding, EventDecoder
from events.producer import EventProducer
from events.registry import RegistrySettings, RegistryWriterLookup, connect, registry_from
from events.schemas import SchemaSet
from events.schemas import load as load_schemas
from events.sources import SourceDecoder, load_sources


@dataclass(frozen=True)
class EventsConfig:
    """Encodings and registry settings, validated.

    Attributes:
        topic_encodings: explicit encodings by topic.
        default_encoding: the encoding of every other topic.
        registry: how to reach the Schema Registry; None when none is configured.
        auto_register: whether producers may register the envelope schema.
    """

    topic_encodings: Mapping[str, Encoding] = field(default_factory=dict)
    default_encoding: Encoding = "auto"
    registry: RegistrySettings | None = None
    auto_register: bool = False

    def encoding(self, topic: str) -> Encoding:
        """The encoding of ``topic``."""
        return self.topic_encodings.get(topic, self.default_encoding)


def load_config(environ: Mapping[str, str] | None = None) -> EventsConfig:
    """Reads the events settings (the process's environment by default)."""
    return config_from(EventSettings.load(environ), SchemaRegistrySettings.load(environ))


def config_from(events: EventSettings, registry_settings: SchemaRegistrySettings) -> EventsConfig:
    """The events config of validated settings; a topic set to ``registry`` without a registry URL is an error."""
    registry = registry_from(registry_settings)
    encodings = dict(events.topic_encodings)
    if registry is None:
        url = SchemaRegistrySettings.variable("url")
        needing = sorted(t for t, e in encodings.items() if e == "registry")
        if needing:
            raise ConfigError(url, f"topics {', '.join(needing)} use the registry encoding but no registry is configured")
        if events.default_encoding == "registry":
            raise ConfigError(url, "EVENTFLOW_DEFAULT_ENCODING is registry but no registry is configured")
    return EventsConfig(topic_encodings=encodings, default_encoding=events.default_encoding, registry=registry,
                        auto_register=events.auto_register)


def _schemas(environ: Mapping[str, str] | None) -> SchemaSet:
    return load_schemas(EventSettings.load(environ).avro_dir)


def build_decoder(environ: Mapping[str, str] | None = None, *, schemas: SchemaSet | None = None) -> EventDecoder:
    """The envelope decoder: call it as ``decoder(value, topic=message.topic())``.

    Writer schemas are fetched from the registry once per schema id when one is configured.
    """
    config = load_config(environ)
    lookup = RegistryWriterLookup(connect(config.registry)) if config.registry is not None else None
    return EventDecoder(schemas or _schemas(environ), lookup, encodings=config.topic_encodings,
                        default_encoding=config.default_encoding)


def build_record_decoder(environ: Mapping[str, str] | None = None, *, sources_file: Path,
                         schemas: SchemaSet | None = None) -> EventDecoder | SourceDecoder:
    """The consumer's decoder: the sources of ``sources_file`` (when it lists any), then the envelope.

    One registry cache serves the envelope and every source.
    """
    sources = load_sources(sources_file)
    envelope = build_decoder(environ, schemas=schemas)
    return SourceDecoder(sources, envelope, envelope.registry_lookup) if sources else envelope


def build_producer(client_config: Mapping[str, str], topic: str, environ: Mapping[str, str] | None = None, *,
                   schemas: SchemaSet | None = None) -> EventProducer:
    """A producer writing ``topic``'s encoding: Confluent wire format for ``registry`` topics,
    single-object Avro otherwise (``json`` topics get JSON)."""
    config = load_config(environ)
    encoding = config.encoding(topic)
    registry = None
    if encoding == "registry" and config.registry is not None:
        registry = connect(config.registry)
    return EventProducer(client_config, topic, schemas or _schemas(environ), registry=registry,
                         subject_strategy=config.registry.subject_strategy if config.registry else "topic",
                         auto_register=config.auto_register, json_values=encoding == "json")
