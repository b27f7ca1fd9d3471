"""How Eventflow's values become Temporal payloads: the SDK's JSON, built without deep copies.

The SDK's JSON encoder turns a dataclass into a dict with `dataclasses.asdict`, which deep-copies
every value on the way: for a journey's start input (the whole definition snapshot) that copy was
most of the encoding, about 100 µs of the consumer's time per start. `FieldsEncoder` hands the
encoder the dataclass's fields as they are and lets it walk them, which writes the same bytes (the
SDK sorts keys) for a quarter of the time.

Decoding is the SDK's, but for one cost: it resolves a dataclass's type hints (``typing.get_type_hints``,
which evaluates every annotation string again) for each dataclass in each payload it decodes, about a
tenth of the worker's time at capacity. `DataclassFields` decodes a dataclass as the SDK does, with
each class's field types resolved once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from temporalio.converter import (
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    JSONTypeConverterUnhandled,
    value_to_type,
)


class FieldsEncoder(AdvancedJSONEncoder):
    """The SDK's JSON encoder, with a dataclass given as its fields instead of a deep copy of them."""

    def default(self, o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
        return super().default(o)


_Fields = tuple[tuple[str, Any, bool], ...]
#: Each class's fields with their resolved types, shared by every converter: the workflow worker makes
#: a payload converter per workflow instance, so a cache per converter resolved them for every workflow.
_FIELDS: dict[type, _Fields] = {}


class DataclassFields(JSONTypeConverter):
    """Decodes a dataclass as the SDK does (present fields converted by their types, then the class
    called, ``init=False`` fields set after), with each class's field types resolved once per process."""

    def __init__(self) -> None:
        self._converters: Sequence[JSONTypeConverter] = (self,)

    def to_typed_value(self, hint: type, value: Any) -> Any | None | JSONTypeConverterUnhandled:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        fields = _FIELDS.get(hint)
        if fields is None:
            hints = typing.get_type_hints(hint)
            fields = _FIELDS[hint] = tuple((f.name, hints[f.name], f.init) for f in dataclasses.fields(hint))
        arguments: dict[str, Any] = {}
        later: dict[str, Any] = {}
        for name, field_type, init in fields:
            if name not in value:
                continue
            try:
                converted = value_to_type(field_type, value[name], self._converters)
            except Exception as err:
                raise TypeError(f"Failed converting field {name} on dataclass {hint}") from err
            (arguments if init else later)[name] = converted
        instance = hint(**arguments)
        for name, converted in later.items():
            object.__setattr__(instance, name, converted)
        return instance


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default payload converters, with `FieldsEncoder` and `DataclassFields` for JSON."""

    def __init__(self) -> None:
        json = JSONPlainPayloadConverter(encoder=FieldsEncoder, custom_type_converters=[DataclassFields()])
        super().__init__(*(json if isinstance(converter, JSONPlainPayloadConverter) else converter
                           for converter in DefaultPayloadConverter.default_encoding_payload_converters))


__all__ = ["DataclassFields", "FieldsEncoder", "PayloadConverter"]
