"""Eventflow's own Avro schemas, loaded from ``avro/``: the reader schema and the known writers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, fingerprint, load_schema, to_parsing_canonical_form

from core.errors import ConfigError
from core.settings import EventSettings

NAMESPACE = "com.eventflow.events"
ENVELOPE = f"{NAMESPACE}.CustomerEvent"
AVRO_DIR_ENV = EventSettings.variable("avro_dir")
HISTORY_DIR = "history"

ParsedSchema = dict[str, Any]


def default_avro_dir() -> Path:
    """``$EVENTFLOW_AVRO_DIR`` or the ``avro/`` folder beside the packages."""
    explicit = EventSettings.load().avro_dir
    return explicit if explicit is not None else Path(__file__).resolve().parent.parent / "avro"


@dataclass(frozen=True)
class SchemaSet:
    """The envelope schema in parsed form plus what the decoder needs to know about it.

    Attributes:
        envelope: fastavro-parsed ``CustomerEvent`` schema, used as reader and as embedded writer.
        canonical: its Parsing Canonical Form.
        fingerprint: its 8-byte CRC-64-AVRO fingerprint (little-endian, as single-object encoding writes it).
        event_types: short names of the payload records (the union's branches).
        writers: earlier envelope versions (``avro/history/``) by fingerprint, so single-object
            records from producers still on them decode (embedded mode needs no registry).
    """

    envelope: ParsedSchema
    canonical: str
    fingerprint: bytes
    event_types: frozenset[str]
    writers: Mapping[bytes, ParsedSchema] = field(default_factory=dict)

    def expanded_json(self) -> str:
        """The envelope with every named type inlined, as a registry expects it."""
        return json.dumps(_strip_fastavro_keys(self.envelope))


def _strip_fastavro_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_fastavro_keys(v) for k, v in value.items() if not k.startswith("__fastavro")}
    if isinstance(value, list):
        return [_strip_fastavro_keys(v) for v in value]
    return value


@cache
def load(avro_dir: Path | None = None) -> SchemaSet:
    """Loads and checks the envelope schema from ``avro_dir``; cached per folder."""
    return read(avro_dir)


def read(avro_dir: Path | None = None) -> SchemaSet:
    """Loads and checks the envelope schema from ``avro_dir`` as the files are now (no cache)."""
    folder = avro_dir or default_avro_dir()
    path = folder / f"{ENVELOPE}.avsc"
    if not path.exists():
        raise ConfigError(AVRO_DIR_ENV, f"no {path.name} in {folder}")
    envelope = cast(ParsedSchema, load_schema(str(path)))
    canonical = to_parsing_canonical_form(envelope)
    payload_field = next(f for f in envelope["fields"] if f["name"] == "payload")
    event_types = frozenset(branch["name"].rsplit(".", 1)[-1] for branch in payload_field["type"])
    return SchemaSet(
        envelope=envelope,
        canonical=canonical,
        fingerprint=fingerprint_of(envelope),
        event_types=event_types,
        writers={print_: writer for print_, (_, writer) in read_history(folder).items()},
    )


def fingerprint_of(schema: ParsedSchema) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a parsed schema, as single-object encoding writes it."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def history_name(print_: bytes) -> str:
    """The file name an envelope version with this fingerprint is kept under in ``avro/history/``."""
    return f"CustomerEvent-{print_.hex()}.avsc"


def read_history(avro_dir: Path) -> dict[bytes, tuple[Path, ParsedSchema]]:
    """The earlier envelope versions kept in ``avro_dir/history/`` (expanded JSON), by fingerprint."""
    found: dict[bytes, tuple[Path, ParsedSchema]] = {}
    for path in sorted((avro_dir / HISTORY_DIR).glob("*.avsc")):
        try:
            parsed = parse_schema(json.loads(path.read_text()), named_schemas={})
        except (ValueError, SchemaParseException) as exc:
            raise ConfigError(AVRO_DIR_ENV, f"{path} is not a valid Avro schema: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError(AVRO_DIR_ENV, f"{path} is not an Avro record schema")
        found[fingerprint_of(parsed)] = (path, parsed)
    return found
