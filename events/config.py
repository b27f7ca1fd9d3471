"""How each topic's events are encoded, read once from the environment, and the factories built on it.

``build_decoder(environ)`` is what the consumer calls; ``build_producer(...)`` is what
``eventflow produce`` and upstream services call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import cast

from eventflow.errors import ConfigError
from eventflow.settings import Setting, register
from events.codec import ENCODINGS, Encoding, EventDecoder
from events.producer import EventProducer
from events.registry import RegistrySettings, RegistryWriterLookup, connect, registry_settings
from events.schemas import AVRO_DIR_ENV, SchemaSet
from events.schemas import load as load_schemas


def _encoding(raw: str) -> str:
    if raw not in ENCODINGS:
        raise ValueError(f"must be one of {', '.join(ENCODINGS)}")
    return raw


def _topic_encodings(raw: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        topic, sep, encoding = part.partition("=")
        if not sep or not topic.strip():
            raise ValueError(f"{part!r} is not topic=encoding")
        pairs[topic.strip()] = _encoding(encoding.strip())
    return pairs


TOPIC_ENCODINGS: Setting[dict[str, str]] = Setting("EVENTFLOW_TOPIC_ENCODINGS", _topic_encodings, None,
                          "Per-topic value encoding, `topic=registry,other=embedded`; encodings: "
                          "auto, registry, embedded, json.", "mapping")
DEFAULT_ENCODING = Setting("EVENTFLOW_DEFAULT_ENCODING", _encoding, "auto",
                           "Encoding of topics not in EVENTFLOW_TOPIC_ENCODINGS: auto (Confluent wire format "
                           "or Avro single-object, by magic byte), registry, embedded or json.", "choice")
AUTO_REGISTER = Setting("EVENTFLOW_SCHEMA_REGISTRY_AUTO_REGISTER", lambda raw: raw.lower() in ("1", "true", "yes"),
                        False, "Producer registers the envelope schema if the subject lacks it "
                        "(off: run `eventflow schemas register` first).", "bool")
for _setting in (TOPIC_ENCODINGS, DEFAULT_ENCODING, AUTO_REGISTER):
    register(_setting)


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
    """Reads the events settings; a topic set to ``registry`` without a registry URL is an error."""
    env = os.environ if environ is None else environ
    encodings = cast(dict[str, Encoding], TOPIC_ENCODINGS.read(env) or {})
    default = cast(Encoding, DEFAULT_ENCODING.read(env) or "auto")
    registry = registry_settings(env)
    if registry is None:
        needing = sorted(t for t, e in encodings.items() if e == "registry")
        if needing:
            raise ConfigError("EVENTFLOW_SCHEMA_REGISTRY_URL",
                              f"topics {', '.join(needing)} use the registry encoding but no registry is configured")
        if default == "registry":
            raise ConfigError("EVENTFLOW_SCHEMA_REGISTRY_URL",
                              "EVENTFLOW_DEFAULT_ENCODING is registry but no registry is configured")
    return EventsConfig(topic_encodings=encodings, default_encoding=default, registry=registry,
                        auto_register=bool(AUTO_REGISTER.read(env)))


def _schemas(environ: Mapping[str, str] | None) -> SchemaSet:
    folder = (os.environ if environ is None else environ).get(AVRO_DIR_ENV)
    return load_schemas(Path(folder) if folder else None)


def build_decoder(environ: Mapping[str, str] | None = None, *, schemas: SchemaSet | None = None) -> EventDecoder:
    """The consumer's decoder: call it as ``decoder(value, topic=message.topic())``.

    Writer schemas are fetched from the registry once per schema id when one is configured.
    """
    config = load_config(environ)
    lookup = RegistryWriterLookup(connect(config.registry)) if config.registry is not None else None
    return EventDecoder(schemas or _schemas(environ), lookup, encodings=config.topic_encodings,
                        default_encoding=config.default_encoding)


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
