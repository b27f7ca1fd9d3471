"""Sample data built from the Avro schemas: what validation renders templates and checks paths with.

Every field gets a value (a nullable field gets its non-null branch), in the JSON-safe form the
consumer hands to workflows: decimals and timestamps as strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from events.schemas import load as load_schemas

_SAMPLE_CUSTOMER = {
    "id": "cust-sample", "email": "sample@example.com", "phone": "+15555550100", "timezone": "Europe/Berlin",
    "locale": "en", "first_name": "Sam",
}
_TIMESTAMP = "2026-01-15T10:30:00+00:00"


def _named_types(schema: Any, found: dict[str, Mapping[str, Any]]) -> None:
    if isinstance(schema, Mapping):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            found[str(schema["name"])] = schema
            found[str(schema["name"]).rsplit(".", 1)[-1]] = schema
        for value in schema.values():
            _named_types(value, found)
    elif isinstance(schema, list):
        for item in schema:
            _named_types(item, found)


@cache
def _types(avro_dir: Path | None) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    _named_types(load_schemas(avro_dir).envelope, found)
    return found


def _sample(schema: Any, name: str, types: Mapping[str, Mapping[str, Any]]) -> Any:
    if isinstance(schema, str):
        if schema in types:
            return _sample(types[schema], name, types)
        return {"string": f"sample-{name}", "int": 1, "long": 1, "float": 1.5, "double": 1.5, "boolean": True,
                "bytes": "00", "null": None}.get(schema)
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return _sample(branches[0], name, types) if branches else None
    logical = schema.get("logicalType")
    if logical == "decimal":
        return "49.90"
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _TIMESTAMP
    if logical == "uuid":
        return "00000000-0000-4000-8000-000000000000"
    kind = schema.get("type")
    if kind == "record":
        return {f["name"]: _sample(f["type"], f["name"], types) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_sample(schema["items"], name, types)]
    if kind == "map":
        return {"key": _sample(schema["values"], name, types)}
    return _sample(kind, name, types)


def sample_payload(event_type: str, avro_dir: Path | None = None) -> dict[str, Any]:
    """A payload of ``event_type`` with every field set; KeyError when the type is unknown."""
    types = _types(avro_dir)
    value = _sample(types[event_type], event_type, types)
    return dict(value)


def sample_event_context(event_type: str, avro_dir: Path | None = None) -> dict[str, Any]:
    """What ``CustomerEvent.as_context()`` returns for a sample event of ``event_type``."""
    return {
        "event_id": "00000000-0000-4000-8000-000000000000",
        "event_type": event_type,
        "occurred_at": _TIMESTAMP,
        "customer": dict(_SAMPLE_CUSTOMER),
        "payload": sample_payload(event_type, avro_dir),
    }


def sample_from_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A value of any Avro record schema (as JSON) with every field set, in the consumer's JSON-safe form."""
    types: dict[str, Mapping[str, Any]] = {}
    _named_types(schema, types)
    return dict(_sample(schema, str(schema.get("name", "record")), types))


def sample_source_context(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What ``CustomerEvent.as_context()`` returns for a sample source event whose body is ``payload``."""
    return {
        "event_id": "00000000-0000-4000-8000-000000000000",
        "event_type": event_type,
        "occurred_at": _TIMESTAMP,
        "customer": dict(_SAMPLE_CUSTOMER),
        "payload": dict(payload),
    }
