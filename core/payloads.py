"""How Eventflow's values become Temporal payloads: the SDK's JSON, built without deep copies.

The SDK's JSON encoder turns a dataclass into a dict with `dataclasses.asdict`, which deep-copies
every value on the way: for a journey's start input (the whole definition snapshot) that copy was
most of the encoding, about 100 µs of the consumer's time per start. `FieldsEncoder` hands the
encoder the dataclass's fields as they are and lets it walk them, which writes the same bytes (the
SDK sorts keys) for a quarter of the time. Decoding is the SDK's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.converter import (
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)


class FieldsEncoder(AdvancedJSONEncoder):
    """The SDK's JSON encoder, with a dataclass given as its fields instead of a deep copy of them."""

    def default(self, o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
        return super().default(o)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default payload converters, with `FieldsEncoder` for JSON."""

    def __init__(self) -> None:
        super().__init__(*(JSONPlainPayloadConverter(encoder=FieldsEncoder)
                           if isinstance(converter, JSONPlainPayloadConverter) else converter
                           for converter in DefaultPayloadConverter.default_encoding_payload_converters))


__all__ = ["FieldsEncoder", "PayloadConverter"]
