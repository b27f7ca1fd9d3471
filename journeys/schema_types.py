"""What an Avro schema says each field of a source event is, and the comparisons that can never match.

The sample-based checks (`journeys.expressions.type_problems`) see only sample values; a schema
knows more: an enum's symbols, that an ``int`` is never ``"three"``, that a boolean is never a
number. `literal_problems` reports a comparison of such a field with a literal it can never equal
or order against, following the expression semantics (decimal strings compare as numbers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from journeys import expressions

_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


class Kind(StrEnum):
    """A field's kind as far as comparisons go."""

    NUMBER = "number"  # int, long, float, double, and decimals (strings that compare as numbers)
    STRING = "string"
    ENUM = "enum"
    BOOLEAN = "boolean"
    OTHER = "other"


@dataclass(frozen=True)
class Field:
    """One leaf field of an event schema."""

    kind: Kind
    symbols: tuple[str, ...] = ()
    nullable: bool = False


class SourceSample(dict[str, Any]):
    """A sample event context that also knows its schema's leaf fields, by path."""

    fields: Mapping[tuple[str, ...], Field]
    #: Payload paths the source moves to the customer (``payload.buyer.email`` -> ``customer.email``).
    moved: Mapping[str, str]

    def __init__(self, context: Mapping[str, Any], fields: Mapping[tuple[str, ...], Field],
                 moved: Mapping[str, str] | None = None) -> None:
        super().__init__(context)
        self.fields = dict(fields)
        self.moved = dict(moved or {})


def moved_hint(sample: Mapping[str, Any], parts: tuple[str, ...]) -> str:
    """`` (the source moves it to customer.email)`` when ``parts`` is a contact field the source moves."""
    if not isinstance(sample, SourceSample):
        return ""
    target = sample.moved.get(".".join(parts))
    return f" (the source moves it to {target})" if target else ""


def _leaf(schema: Any, named: dict[str, Any]) -> tuple[Field | None, Any]:
    nullable = False
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        nullable = len(branches) < len(schema)
        if len(branches) != 1:
            return Field(Kind.OTHER, nullable=nullable), None
        schema = branches[0]
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, Mapping):
        if schema.get("logicalType") == "decimal":
            return Field(Kind.NUMBER, nullable=nullable), None
        kind = schema.get("type")
        if kind == "record":
            return None, schema
        if kind == "enum":
            return Field(Kind.ENUM, tuple(schema["symbols"]), nullable), None
        if isinstance(kind, str) and kind not in ("array", "map", "fixed"):
            return _leaf([*(["null"] if nullable else []), kind], named)
        return Field(Kind.OTHER, nullable=nullable), None
    simple = {"int": Kind.NUMBER, "long": Kind.NUMBER, "float": Kind.NUMBER, "double": Kind.NUMBER,
              "string": Kind.STRING, "boolean": Kind.BOOLEAN}
    return Field(simple.get(str(schema), Kind.OTHER), nullable=nullable), None


def schema_fields(schema: Mapping[str, Any], prefix: tuple[str, ...] = ("payload",)) -> dict[tuple[str, ...], Field]:
    """Every leaf field of a record schema (as JSON), keyed by its path under ``prefix``."""
    named: dict[str, Any] = {}
    found: dict[tuple[str, ...], Field] = {}

    def walk(record: Mapping[str, Any], path: tuple[str, ...]) -> None:
        named[str(record.get("name"))] = record
        for item in record.get("fields", ()):
            field, nested = _leaf(item["type"], named)
            if isinstance(item["type"], Mapping) and item["type"].get("type") == "enum":
                named[str(item["type"]["name"])] = item["type"]
            if nested is not None:
                walk(nested, (*path, item["name"]))
            elif field is not None:
                found[(*path, item["name"])] = field

    walk(schema, prefix)
    return found


def _never(field: Field, literal: Any, op: str) -> str | None:
    """Why ``field op literal`` can never hold; None when it can."""
    if literal is None or isinstance(literal, (list, tuple)):
        return None
    ordering = op in ("<", "<=", ">", ">=")
    is_number = isinstance(literal, Decimal)
    is_text = isinstance(literal, str)
    match field.kind:
        case Kind.ENUM if is_text and not ordering and literal not in field.symbols:
            return f"is an enum of {', '.join(field.symbols)}; {literal!r} is none of them"
        case Kind.ENUM | Kind.BOOLEAN if is_number:
            return f"is {'an enum' if field.kind is Kind.ENUM else 'a boolean'}, never the number {literal}"
        case Kind.BOOLEAN if is_text:
            return f"is a boolean, never the string {literal!r}"
        case Kind.NUMBER if is_text and not _NUMERIC.match(literal):
            return f"is a number, never the string {literal!r}"
        case Kind.NUMBER | Kind.STRING | Kind.ENUM if isinstance(literal, bool):
            return f"is a {field.kind}, never {str(literal).lower()}"
    return None


def literal_problems(node: expressions.Node, sample: Mapping[str, Any]) -> list[str]:
    """Comparisons in ``node`` of a schema field with a literal it can never match (empty for other samples)."""
    if not isinstance(sample, SourceSample):
        return []
    found: list[str] = []

    def visit(item: expressions.Node) -> None:
        match item:
            case expressions.Not(operand=operand):
                visit(operand)
            case expressions.BoolOp(operands=operands):
                for operand in operands:
                    visit(operand)
            case expressions.Compare(op=op, left=expressions.Path(parts=parts), right=expressions.Literal(value=value)):
                field = sample.fields.get(parts)
                if field is None:
                    return
                values = list(value) if op in ("in", "not in") and isinstance(value, (list, tuple)) else [value]
                if op in ("in", "not in") and not isinstance(value, (list, tuple)):
                    return
                for one in values:
                    why = _never(field, one, "==" if op in ("in", "not in") else op)
                    if why:
                        found.append(f"{'.'.join(parts)} {why}")
    visit(node)
    return found
