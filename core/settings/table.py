"""The README's configuration table, generated from settings classes: every variable, its type, default and readers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.settings._base import LIBRDKAFKA_PREFIX, SettingsGroup, _non_none
from core.settings.connections import KafkaSettings


def _type_name(field: FieldInfo) -> str:
    (annotation, *_) = _non_none(field.annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin is tuple:
        return "csv"
    if origin is dict:
        return "mapping"
    names = {bool: "bool", int: "int", float: "float", str: "str", Path: "path", SecretStr: "secret"}
    return names.get(annotation, "str") if isinstance(annotation, type) else "str"


def _default(field: FieldInfo) -> str:
    default = field.default
    if default is PydanticUndefined or default is None or default in ("", {}, ()):
        return "—"
    shown = ",".join(default) if isinstance(default, tuple) else str(default)
    return f"`{shown}`"


def settings_table(groups: Iterable[type[SettingsGroup]],
                   readers: Callable[[type[SettingsGroup]], Sequence[str]]) -> str:
    """One Markdown row per variable of ``groups`` (in order), naming the processes ``readers`` gives."""
    rows = ["| Concern | Variable | Type | Default | Read by | Meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for group in groups:
        read_by = ", ".join(readers(group))
        for variable, name in group.variables().items():
            field = group.model_fields[name]
            rows.append(f"| {group.concern} | `{variable}` | {_type_name(field)} | {_default(field)} | {read_by} | "
                        f"{field.description or ''} |")
    kafka_readers = ", ".join(readers(KafkaSettings))  # the pass-through is Kafka's
    rows.append(f"| kafka | `{LIBRDKAFKA_PREFIX}*` | str | — | {kafka_readers} | Passed to librdkafka: "
                f"`{LIBRDKAFKA_PREFIX}SASL_MECHANISM` sets `sasl.mechanism`. |")
    return "\n".join(rows)
