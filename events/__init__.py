"""Customer event contracts: the Avro schemas in ``avro/``, their codec and the decoded model.

The consumer builds its decoder with `build_decoder` (per-topic encodings, optional Schema
Registry); upstream services publish with `EventProducer` or `build_producer`.
"""

from events.codec import EventDecoder, encode_single_object, record_from_json
from events.config import EventsConfig, build_decoder, build_producer, load_config
from events.errors import DecodeError, RegistryUnavailableError
from events.model import Customer, CustomerEvent
from events.producer import DeliveryError, EventProducer, InvalidRecordError
from events.schemas import SchemaSet, load

__all__ = [
    "Customer",
    "CustomerEvent",
    "DecodeError",
    "DeliveryError",
    "EventDecoder",
    "EventProducer",
    "EventsConfig",
    "InvalidRecordError",
    "RegistryUnavailableError",
    "SchemaSet",
    "build_decoder",
    "build_producer",
    "encode_single_object",
    "load",
    "load_config",
    "record_from_json",
]
