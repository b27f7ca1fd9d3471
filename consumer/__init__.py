"""The Kafka-to-Temporal bridge on the one Kafka reading loop (`KafkaLoop`, shared by every topic reader): record handler, per-key scheduler, offsets, dead letters, metrics.

The process that runs it is `eventflow.consume` (a tool-layer module, imported by name)."""

from consumer.dead_letter import DeadLetterPublisher, parse_dead_letter_headers
from consumer.dispatch import Dispatcher, Outcome, TransientTemporalError
from consumer.handler import Job, RecordHandler
from consumer.kafka_loop import FixedAssignment, GroupSubscription, Handoff, KafkaLoop, KafkaReadError, LoopOptions
from consumer.ledger import DeadLetterLedger
from consumer.metrics import ConsumerMetrics
from consumer.offsets import OffsetTracker
from consumer.record import DeadLettered, Handled, HandlerResult, SourceRecord, Unrouted
from consumer.retry import Retrier, RetryPolicy
from consumer.scheduler import KeyScheduler
from consumer.service import ConsumerService
from consumer.watermark import PartitionWatermark
from consumer.wiring import build_consumer_service

__all__ = [
    "ConsumerMetrics",
    "ConsumerService",
    "DeadLetterLedger",
    "DeadLetterPublisher",
    "DeadLettered",
    "FixedAssignment",
    "GroupSubscription",
    "Dispatcher",
    "Handled",
    "HandlerResult",
    "Handoff",
    "Job",
    "KafkaLoop",
    "KafkaReadError",
    "KeyScheduler",
    "LoopOptions",
    "OffsetTracker",
    "Outcome",
    "PartitionWatermark",
    "RecordHandler",
    "Retrier",
    "RetryPolicy",
    "SourceRecord",
    "TransientTemporalError",
    "Unrouted",
    "build_consumer_service",
    "parse_dead_letter_headers",
]
