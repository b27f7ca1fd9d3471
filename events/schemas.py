"""Eventflow's own Avro schemas, loaded from ``avro/``: the reader schema and the known writers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

from eventflow.errors import ConfigError

NAMESPACE = "com.eventflow.events"
ENVELOPE = f"{NAMESPACE}.CustomerEvent"
AVRO_DIR_ENV = "EVENTFLOW_AVRO_DIR"

ParsedSchema = dict[str, Any]


def default_avro_dir() -> Path:
    """``$EVENTFLOW_AVRO_DIR`` or the ``avro/`` folder beside the packages."""
    explicit = os.environ.get(AVRO_DIR_ENV)
    return Path(explicit) if explicit else Path(__file__).resolve().parent.parent / "avro"


@dataclass(frozen=True)
class SchemaSet:
    """The envelope schema in parsed form plus what the decoder needs to know about it.

    Attributes:
        envelope: fastavro-parsed ``CustomerEvent`` schema, used as reader and as embedded writer.
        canonical: its Parsing Canonical Form.
        fingerprint: its 8-byte CRC-64-AVRO fingerprint (little-endian, as single-object encoding writes it).
        event_types: short names of the payload records (the union's branches).
    """

    envelope: ParsedSchema
    canonical: str
    fingerprint: bytes
    event_types: frozenset[str]

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
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        event_types=event_types,
    )
