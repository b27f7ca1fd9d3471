"""Writing records the way upstream producers do: any writer schema, either framing."""

from __future__ import annotations

import io
import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from events.codec import SINGLE_OBJECT_MAGIC, record_from_json


def register(client: SchemaRegistryClient, subject: str, schema: dict[str, Any]) -> int:
    """Registers ``schema`` under ``subject``; returns its id."""
    return client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))


def confluent_frame(schema: dict[str, Any], schema_id: int, event: dict[str, Any]) -> bytes:
    """``event`` (JSON form) written with ``schema`` in the Confluent wire format."""
    body = io.BytesIO()
    body.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(body, parse_schema(schema, named_schemas={}), record_from_json(event))
    return body.getvalue()


def single_object_frame(schema: dict[str, Any], event: dict[str, Any]) -> tuple[bytes, bytes, dict[str, Any]]:
    """``event`` written with ``schema`` in single-object encoding; returns (bytes, fingerprint, parsed)."""
    parsed = parse_schema(schema, named_schemas={})
    assert isinstance(parsed, dict)
    print_ = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    body = io.BytesIO()
    body.write(SINGLE_OBJECT_MAGIC + print_)
    schemaless_writer(body, parsed, record_from_json(event))
    return body.getvalue(), print_, parsed
