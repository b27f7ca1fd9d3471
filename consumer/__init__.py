"""The Kafka-to-Temporal bridge: consumer loop, dispatch to Temporal, dead letters and metrics."""

from consumer.app import build_consumer, run_consumer
from consumer.dead_letter import DeadLetterPublisher, parse_dead_letter_headers
from consumer.dispatch import Dispatcher, Outcome, TransientTemporalError
from consumer.metrics import ConsumerMetrics
from consumer.service import ConsumerService, RetryPolicy
from consumer.watermark import PartitionWatermark

__all__ = [
    "ConsumerMetrics",
    "ConsumerService",
    "DeadLetterPublisher",
    "Dispatcher",
    "Outcome",
    "PartitionWatermark",
    "RetryPolicy",
    "TransientTemporalError",
    "build_consumer",
    "parse_dead_letter_headers",
    "run_consumer",
]
