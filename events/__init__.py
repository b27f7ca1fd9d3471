"""Customer event contracts: the Avro schemas in ``avro/``, their codec and the decoded model.

The consumer builds its decoder with `build_record_decoder`: the event sources of
``journeys/sources.yaml`` (`events.sources`), then the envelope decoder of `build_decoder` (per-topic
encodings, optional Schema Registry); upstream services publish with `EventProducer` or `build_producer`.
"""

from events.codec import EventDecoder, encode_single_object, record_from_json
from events.config import EventsConfig, build_decoder, build_producer, build_record_decoder, load_config
from events.errors import DecodeError, RegistryUnavailableError
from events.model import Customer, CustomerEvent, Decoded, Unwanted
from events.producer import DeliveryError, EventProducer, InvalidRecordError, UnknownEventTypeError
from events.schemas import SchemaSet, load
from events.sources import EventSource, RecordDecoder, SourceDecoder, load_sources

__all__ = [
    "Customer",
    "CustomerEvent",
    "DecodeError",
    "Decoded",
    "DeliveryError",
    "EventDecoder",
    "EventProducer",
    "EventSource",
    "EventsConfig",
    "InvalidRecordError",
    "RecordDecoder",
    "RegistryUnavailableError",
    "SchemaSet",
    "SourceDecoder",
    "UnknownEventTypeError",
    "Unwanted",
    "build_decoder",
    "build_producer",
    "build_record_decoder",
    "encode_single_object",
    "load",
    "load_config",
    "load_sources",
    "record_from_json",
]
