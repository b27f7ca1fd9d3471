"""Generic Avro and JSON bodies: any record read with its own writer schema into JSON-safe values.

No reader schema is compiled in: a Confluent wire-format body is read with the writer schema the
registry names (optionally resolved against a reader schema a source pins, for evolution). The
values become what Temporal's JSON converter and the journey expressions can hold:

* ``decimal`` -> string (``"12.50"``), exact; ``bytes``/``fixed`` -> lower-case hex string;
* ``timestamp-millis``/``-micros`` -> ISO 8601 string with offset, ``local-timestamp-*`` -> ISO without,
  ``date`` -> ``YYYY-MM-DD``, ``time-millis``/``-micros`` -> ``HH:MM:SS[.ffffff]``;
* ``uuid`` -> string; ``enum`` -> its symbol; a union -> the value of the branch written (no branch name);
* records and maps -> objects, arrays -> lists.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fastavro import schemaless_reader
from fastavro._read_common import SchemaResolutionError as FastavroResolutionError

from events.errors import InvalidEventError, SchemaResolutionError, TruncatedMessageError
from events.model import JsonValue
from events.schemas import ParsedSchema

#: Deepest nesting a generic body may have; deeper input is poison, not an event.
MAX_DEPTH = 32

_JSON_SAFE: dict[type, Callable[[Any], JsonValue]] = {
    Decimal: str,
    dt.datetime: lambda v: v.isoformat(),
    dt.date: lambda v: v.isoformat(),
    dt.time: lambda v: v.isoformat(),
    uuid.UUID: str,
    bytes: lambda v: v.hex(),
}


def json_safe(value: Any) -> JsonValue:
    """``value`` as fastavro returned it, in the JSON-safe forms listed in the module docstring."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    convert = _JSON_SAFE.get(type(value))
    return convert(value) if convert else value


def record_name(schema: ParsedSchema) -> str | None:
    """The full name of a record schema (``com.shop.orders.OrderPlaced``), None for other schemas."""
    name = schema.get("name") if isinstance(schema, dict) else None
    return str(name) if isinstance(name, str) and schema.get("type") == "record" else None


def read_avro(raw: bytes, start: int, writer: ParsedSchema, reader: ParsedSchema | None = None) -> dict[str, JsonValue]:
    """Reads the Avro body of ``raw`` from ``start`` with ``writer`` (resolved to ``reader`` when given).

    Raises:
        TruncatedMessageError: the body ends early.
        SchemaResolutionError: the writer schema does not resolve against the pinned reader schema.
        InvalidEventError: anything else wrong with the body, or it is not a record.
    """
    body = io.BytesIO(raw)
    body.seek(start)
    try:
        value = schemaless_reader(body, writer, reader)
    except FastavroResolutionError as exc:
        raise SchemaResolutionError(f"writer schema {record_name(writer)} does not resolve against the pinned "
                                    f"reader schema: {str(exc)[:300]}", raw) from exc
    except EOFError as exc:
        raise TruncatedMessageError(f"Avro body ends early at byte {body.tell()}", raw) from exc
    except UnicodeDecodeError as exc:
        raise InvalidEventError(f"string field is not UTF-8: {exc.reason}", raw) from exc
    except IndexError as exc:
        raise InvalidEventError("union branch or enum symbol index out of range", raw) from exc
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, MemoryError, ArithmeticError,
            StopIteration, RecursionError) as exc:
        raise InvalidEventError(f"Avro body is malformed: {type(exc).__name__}: {str(exc)[:200]}", raw) from exc
    if body.tell() != len(raw):
        raise InvalidEventError(f"{len(raw) - body.tell()} trailing bytes after the Avro body", raw)
    if not isinstance(value, dict):
        raise InvalidEventError(f"Avro body is a {type(value).__name__}, not a record", raw)
    return {str(k): json_safe(v) for k, v in value.items()}


def read_json_object(body: bytes, raw: bytes) -> dict[str, JsonValue]:
    """``body`` parsed as a JSON object of bounded depth; ``raw`` is what errors carry."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEventError(f"value is not JSON: {str(exc)[:200]}", raw) from exc
    except RecursionError as exc:
        raise InvalidEventError(f"JSON value is nested deeper than {MAX_DEPTH} levels", raw) from exc
    return checked_object(value, raw)


def checked_object(value: Any, raw: bytes) -> dict[str, JsonValue]:
    """``value`` (parsed JSON) if it is an object nested no deeper than `MAX_DEPTH`; `InvalidEventError` otherwise."""
    if not isinstance(value, dict):
        raise InvalidEventError(f"JSON value is a {type(value).__name__}, not an object", raw)
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: list[object]
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidEventError(f"JSON value is nested deeper than {MAX_DEPTH} levels", raw)
        stack.extend((child, depth + 1) for child in children)
    return value
