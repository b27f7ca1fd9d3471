"""Avro schema-resolution rules: can data written with one schema be read with another?

`check` walks a reader and a writer schema (both as fastavro parses them: full names, named types
inlined once and referenced by name afterwards) and lists every place where the Avro
specification's resolution rules fail. ``eventflow schemas check`` uses it for compatibility
levels, and the decoder uses it to say exactly why a record could not be resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

#: A parsed Avro schema: a type name, a union list, or a complex type's mapping.
Schema = str | list[object] | Mapping[str, object]

IncompatibilityKind = Literal["missing_field", "type_mismatch", "name_mismatch", "missing_symbol",
                              "missing_union_branch", "fixed_size"]
Level = Literal["backward", "forward", "full"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(frozen=True)
class Incompatibility:
    """One place where writer data cannot be read with the reader schema.

    Attributes:
        path: where, e.g. ``CustomerEvent.payload[PurchaseCompleted].total``.
        kind: the rule that failed (bounded set, usable in code).
        message: a sentence a schema author can act on.
    """

    path: str
    kind: IncompatibilityKind
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def check(reader: Schema, writer: Schema) -> list[Incompatibility]:
    """Every reason data written with ``writer`` cannot be read with ``reader`` (empty: compatible)."""
    checker = _Checker(_named_types(reader), _named_types(writer))
    checker.resolve(reader, writer, _short(reader) or "")
    return checker.problems


def check_level(new: Schema, old: Schema, level: Level) -> list[Incompatibility]:
    """Confluent-style compatibility levels between a new schema and the previous one.

    ``backward``: the new schema reads old data; ``forward``: the old schema reads new data;
    ``full``: both.
    """
    problems: list[Incompatibility] = []
    if level in ("backward", "full"):
        problems += check(new, old)
    if level in ("forward", "full"):
        problems += [Incompatibility(p.path, p.kind, f"(forward) {p.message}") for p in check(old, new)]
    return problems


def _short(schema: object) -> str | None:
    name = _type_name(schema)
    return name.rsplit(".", 1)[-1] if name else None


def _type_name(schema: object) -> str | None:
    if isinstance(schema, Mapping) and isinstance(schema.get("name"), str):
        return str(schema["name"])
    return None


def _named_types(schema: object, into: dict[str, Mapping[str, object]] | None = None) -> dict[str, Mapping[str, object]]:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``, by full name."""
    found = {} if into is None else into
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found)
    elif isinstance(schema, Mapping):
        name = _type_name(schema)
        if name and schema.get("type") in ("record", "error", "enum", "fixed"):
            if name in found:
                return found
            found[name] = schema
        for field in schema.get("fields", []) if isinstance(schema.get("fields"), list) else []:
            if isinstance(field, Mapping):
                _named_types(field.get("type"), found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], found)
        if isinstance(schema.get("type"), (Mapping, list)):
            _named_types(schema["type"], found)
    return found


class _Checker:
    def __init__(self, reader_names: Mapping[str, Mapping[str, object]],
                 writer_names: Mapping[str, Mapping[str, object]]) -> None:
        self._reader_names = reader_names
        self._writer_names = writer_names
        self._seen: set[tuple[str, str]] = set()
        self.problems: list[Incompatibility] = []

    def _deref(self, schema: object, names: Mapping[str, Mapping[str, object]]) -> object:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return names.get(schema, schema)
        if isinstance(schema, Mapping) and isinstance(schema.get("type"), (str, list, Mapping)) and \
                schema.get("type") not in ("record", "error", "enum", "fixed", "array", "map"):
            # {"type": "long", "logicalType": ...} and {"type": "Name"}: resolution ignores logical types
            return self._deref(schema["type"], names)
        return schema

    def _kind(self, schema: object) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        if isinstance(schema, Mapping):
            return str(schema.get("type"))
        return repr(schema)

    def _add(self, path: str, kind: IncompatibilityKind, message: str) -> None:
        self.problems.append(Incompatibility(path, kind, message))

    def _branch_for(self, reader_union: list[object], writer: object) -> object | None:
        """The reader union branch a writer type resolves to: same name or kind first, then promotions."""
        written = self._deref(writer, self._writer_names)
        writer_kind, writer_name = self._kind(written), _short(written)
        promotable = None
        for branch in reader_union:
            candidate = self._deref(branch, self._reader_names)
            kind = self._kind(candidate)
            if kind == writer_kind and (writer_name is None or _short(candidate) == writer_name):
                return branch
            if promotable is None and kind in _PROMOTIONS.get(writer_kind, frozenset()):
                promotable = branch
        return promotable

    def resolve(self, reader_schema: object, writer_schema: object, path: str) -> None:
        reader = self._deref(reader_schema, self._reader_names)
        writer = self._deref(writer_schema, self._writer_names)
        reader_kind, writer_kind = self._kind(reader), self._kind(writer)
        if writer_kind == "union":
            assert isinstance(writer, list)
            for branch in writer:
                branch_path = f"{path}[{_short(self._deref(branch, self._writer_names)) or self._kind(self._deref(branch, self._writer_names))}]"
                if reader_kind == "union":
                    assert isinstance(reader, list)
                    chosen = self._branch_for(reader, branch)
                    if chosen is None:
                        label = _short(self._deref(branch, self._writer_names)) or self._kind(branch)
                        self._add(branch_path, "missing_union_branch",
                                  f"writer union branch {label} has no matching branch in the reader")
                    else:
                        self.resolve(chosen, branch, branch_path)
                else:
                    self.resolve(reader, branch, path)
            return
        if reader_kind == "union":
            assert isinstance(reader, list)
            chosen = self._branch_for(reader, writer)
            if chosen is None:
                self._add(path, "type_mismatch",
                          f"writer type {_short(writer) or writer_kind} matches no branch of the reader union")
            else:
                self.resolve(chosen, writer, path)
            return
        if reader_kind in _PRIMITIVES or writer_kind in _PRIMITIVES:
            if reader_kind != writer_kind and reader_kind not in _PROMOTIONS.get(writer_kind, frozenset()):
                self._add(path, "type_mismatch", f"writer type {writer_kind} cannot be read as {reader_kind}")
            return
        if reader_kind != writer_kind:
            self._add(path, "type_mismatch", f"writer type {writer_kind} cannot be read as {reader_kind}")
            return
        assert isinstance(reader, Mapping) and isinstance(writer, Mapping)
        if reader_kind == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif reader_kind == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")
        elif reader_kind in ("record", "error"):
            self._record(reader, writer, path)
        elif reader_kind == "enum":
            if self._names_match(reader, writer, path):
                missing = [s for s in _strings(writer.get("symbols")) if s not in _strings(reader.get("symbols"))]
                if missing and reader.get("default") is None:
                    self._add(path, "missing_symbol",
                              f"reader enum {_short(reader)} lacks writer symbols {', '.join(missing)} and has no default")
        elif reader_kind == "fixed":
            if self._names_match(reader, writer, path) and reader.get("size") != writer.get("size"):
                self._add(path, "fixed_size", f"fixed size {writer.get('size')} cannot be read as size {reader.get('size')}")

    def _names_match(self, reader: Mapping[str, object], writer: Mapping[str, object], path: str) -> bool:
        reader_name, writer_name = _type_name(reader) or "", _type_name(writer) or ""
        aliases = {str(a).rsplit(".", 1)[-1] for a in _strings(reader.get("aliases"))}
        writer_short = writer_name.rsplit(".", 1)[-1]
        if reader_name.rsplit(".", 1)[-1] == writer_short or writer_short in aliases:
            return True
        self._add(path, "name_mismatch", f"writer type {writer_name} cannot be read as {reader_name}")
        return False

    def _record(self, reader: Mapping[str, object], writer: Mapping[str, object], path: str) -> None:
        if not self._names_match(reader, writer, path):
            return
        key = (str(_type_name(reader)), str(_type_name(writer)))
        if key in self._seen:
            return
        self._seen.add(key)
        writer_fields = {str(f["name"]): f for f in _fields(writer)}
        for field in _fields(reader):
            name = str(field["name"])
            candidates = [name, *_strings(field.get("aliases"))]
            written = next((writer_fields[c] for c in candidates if c in writer_fields), None)
            field_path = f"{path}.{name}"
            if written is None:
                if "default" not in field:
                    self._add(field_path, "missing_field",
                              f"reader field {name} is missing from the writer and has no default")
                continue
            self.resolve(field["type"], written["type"], field_path)
        self._seen.discard(key)


def _fields(record: Mapping[str, object]) -> Sequence[Mapping[str, object]]:
    fields = record.get("fields")
    return [f for f in fields if isinstance(f, Mapping)] if isinstance(fields, list) else []


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
