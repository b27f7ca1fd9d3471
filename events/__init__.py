"""Customer event contracts: the Avro schemas in ``avro/``, their codec and the decoded model."""

from events.codec import EventDecoder, encode_single_object, record_from_json
from events.errors import DecodeError, RegistryUnavailableError
from events.model import Customer, CustomerEvent
from events.schemas import SchemaSet, load

__all__ = [
    "Customer",
    "CustomerEvent",
    "DecodeError",
    "EventDecoder",
    "RegistryUnavailableError",
    "SchemaSet",
    "encode_single_object",
    "load",
    "record_from_json",
]
