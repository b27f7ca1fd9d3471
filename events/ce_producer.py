"""Writing CloudEvents to Kafka (``eventflow produce --cloudevents binary|structured``).

Input events are CloudEvents in their JSON form (``specversion``, ``id``, ``source``, ``type``,
optional ``subject``, ``time``, ``datacontenttype``, and ``data``). Binary mode writes the attributes
as ``ce_*`` headers and the data as the value: JSON, or, with a data schema, Avro in the Confluent
wire format registered in the schema registry (``content-type: application/avro``). Structured mode
writes the whole event as one ``application/cloudevents+json`` value. The Kafka key is the
``partitionkey`` extension, else the ``subject``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from events.cloudevents import CONTENT_TYPE, HEADER_PREFIX, REQUIRED, STRUCTURED_JSON, Mode

#: Serializes ``data`` to bytes (a registry Avro serializer bound to the topic).
DataSerializer = Callable[[Mapping[str, Any]], bytes]
AVRO_CONTENT_TYPE = "application/avro"


class CloudEventInputError(ValueError):
    """An input line is not a CloudEvent in JSON form."""


@dataclass(frozen=True)
class KafkaCloudEvent:
    """One CloudEvent as a Kafka record."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def to_kafka(event: Mapping[str, Any], mode: Mode, data_serializer: DataSerializer | None = None) -> KafkaCloudEvent:
    """``event`` (a CloudEvent in JSON form) as a Kafka record in ``mode``."""
    missing = [name for name in REQUIRED if name != "specversion" and not event.get(name)]
    if missing:
        named = f"CloudEvent {event['id']!r}" if event.get("id") else "CloudEvent"
        raise CloudEventInputError(f"{named} lacks {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    attributes = {"specversion": "1.0", **{k: v for k, v in event.items() if k not in ("data", "data_base64")}}
    key_text = attributes.get("partitionkey") or attributes.get("subject")
    key = str(key_text).encode() if key_text else None
    data = event.get("data")
    if mode is Mode.STRUCTURED:
        return KafkaCloudEvent(key, json.dumps({**attributes, "data": data}).encode(),
                               [(CONTENT_TYPE, STRUCTURED_JSON.encode())])
    if data_serializer is not None:
        if not isinstance(data, Mapping):
            raise CloudEventInputError(f"CloudEvent {event['id']!r}: Avro data must be an object")
        attributes["datacontenttype"] = AVRO_CONTENT_TYPE
        value = data_serializer(data)
    else:
        attributes.setdefault("datacontenttype", "application/json")
        value = json.dumps(data).encode()
    headers: list[tuple[str, str | bytes | None]] = [(CONTENT_TYPE if name == "datacontenttype" else f"{HEADER_PREFIX}{name}", str(text).encode())
               for name, text in attributes.items() if text is not None]
    return KafkaCloudEvent(key, value, headers)
