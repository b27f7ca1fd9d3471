"""The Avro resolution checker behind `eventflow schemas check` and the decoder's error messages."""

from __future__ import annotations

import copy
from typing import Any

from fastavro import parse_schema

from events.compat import check, check_level
from tests.events import variants


def parsed(schema: dict[str, Any]) -> dict[str, Any]:
    result = parse_schema(copy.deepcopy(schema), named_schemas={})
    assert isinstance(result, dict)
    return result


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def test_the_current_envelope_reads_itself() -> None:
    envelope = parsed(variants.current())
    assert check(envelope, envelope) == []


def test_current_reads_older_and_newer_versions_except_the_new_event_type() -> None:
    current = parsed(variants.current())
    assert check(current, parsed(variants.older())) == []
    problems = check(current, parsed(variants.newer()))
    assert [(p.path, p.kind) for p in problems] == [
        ("CustomerEvent.payload[LoyaltyPointsEarned]", "missing_union_branch")]


def test_a_required_field_without_default_is_backward_incompatible() -> None:
    problems = check_level(parsed(variants.incompatible()), parsed(variants.current()), "backward")
    assert [(p.path, p.kind) for p in problems] == [("CustomerEvent.customer.segment", "missing_field")]
    assert "segment" in problems[0].message and "no default" in problems[0].message


def test_promotions_resolve_and_narrowing_does_not() -> None:
    for writer, reader in [("int", "long"), ("int", "double"), ("long", "float"), ("float", "double"),
                           ("string", "bytes"), ("bytes", "string")]:
        assert check(record({"name": "f", "type": reader}), record({"name": "f", "type": writer})) == [], (writer, reader)
    problems = check(record({"name": "f", "type": "int"}), record({"name": "f", "type": "long"}))
    assert [(p.path, p.kind) for p in problems] == [("R.f", "type_mismatch")]


def test_logical_types_resolve_by_their_underlying_type() -> None:
    reader = record({"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}})
    assert check(parsed(reader), parsed(record({"name": "at", "type": "int"}))) == []


def test_removed_writer_fields_are_ignored_and_added_reader_fields_need_defaults() -> None:
    writer = record({"name": "a", "type": "string"}, {"name": "gone", "type": "int"})
    reader = record({"name": "a", "type": "string"}, {"name": "new", "type": ["null", "string"], "default": None})
    assert check(reader, writer) == []


def test_enum_symbols_and_union_branches() -> None:
    writer = record({"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["A", "B"]}})
    narrower = record({"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["A"]}})
    with_default = record({"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["A"], "default": "A"}})
    assert [p.kind for p in check(narrower, writer)] == ["missing_symbol"]
    assert check(with_default, writer) == []
    union_writer = record({"name": "u", "type": ["null", "string", "int"]})
    union_reader = record({"name": "u", "type": ["null", "string"]})
    assert [(p.path, p.kind) for p in check(union_reader, union_writer)] == [("R.u[int]", "missing_union_branch")]
    assert check(record({"name": "u", "type": ["null", "long"]}), record({"name": "u", "type": "int"})) == []


def test_record_renames_need_an_alias_and_recursive_types_terminate() -> None:
    writer = record({"name": "f", "type": record({"name": "x", "type": "int"}, name="Old")})
    renamed = record({"name": "f", "type": record({"name": "x", "type": "int"}, name="New")})
    aliased = record({"name": "f", "type": {**record({"name": "x", "type": "int"}, name="New"), "aliases": ["Old"]}})
    assert [p.kind for p in check(parsed(renamed), parsed(writer))] == ["name_mismatch"]
    assert check(parsed(aliased), parsed(writer)) == []
    linked = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "int"}, {"name": "next", "type": ["null", "Node"], "default": None}]}
    assert check(parsed(linked), parsed(linked)) == []


def test_forward_and_full_levels() -> None:
    new, old = parsed(variants.newer()), parsed(variants.current())
    assert check_level(new, old, "backward") == []
    forward = check_level(new, old, "forward")
    assert [p.kind for p in forward] == ["missing_union_branch"]
    assert forward[0].message.startswith("(forward)")
    assert len(check_level(new, old, "full")) == 1
