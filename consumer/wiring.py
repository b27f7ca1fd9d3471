"""The one place a consumer service is assembled from its parts (app, test harness and benchmark)."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from consumer.dead_letter import DeadLetterPublisher
from consumer.handler import ActionDispatcher, EventRouter, RecordHandler
from consumer.ledger import DeadLetterLedger
from consumer.metrics import ConsumerMetrics
from consumer.offsets import OffsetTracker
from consumer.retry import DEFAULT_RETRY, Retrier, RetryPolicy
from consumer.scheduler import KeyScheduler
from consumer.service import BackgroundTask, ConsumerFactory, ConsumerService
from core.settings import ConsumerSettings, KafkaSettings
from events.sources import RecordDecoder


def build_consumer_service(*, kafka: KafkaSettings, settings: ConsumerSettings, decoder: RecordDecoder,
                           router: EventRouter, dispatcher: ActionDispatcher,
                           metrics: ConsumerMetrics | None = None, registry: CollectorRegistry | None = None,
                           retry: RetryPolicy = DEFAULT_RETRY, commit_interval_seconds: float = 1.0,
                           stall_after_seconds: float = 60.0,
                           consumer_factory: ConsumerFactory = Consumer,
                           background: Sequence[BackgroundTask] = ()) -> ConsumerService:
    """A consumer-group member: handler, scheduler, offset tracker and dead-letter ledger around one poll loop.

    Args:
        kafka, settings: validated process settings.
        decoder, router, dispatcher: how records become Temporal calls.
        metrics: the metrics object; else one is built on ``registry`` (a fresh one by default).
        retry: back-off for transient failures.
        commit_interval_seconds: how often offsets are committed.
        stall_after_seconds: how long a partition may not move with records in flight before it is reported.
        consumer_factory: builds the Kafka consumer from its configuration (``confluent_kafka.Consumer``).
        background: loops run beside polling, such as the catalog follower behind `LiveRoutes`.
    """
    metrics = metrics or ConsumerMetrics(registry or CollectorRegistry())
    scheduler = KeyScheduler(settings.max_in_flight)
    retrier = Retrier(retry, metrics, on_settled=scheduler.wake)
    ledger = DeadLetterLedger(DeadLetterPublisher(kafka.client_config(), kafka.dlq_topic),
                              group_id=kafka.consumer_group, metrics=metrics, retry=retry)
    handler = RecordHandler(decoder=decoder, router=router, dispatcher=dispatcher, dead_letters=ledger,
                            retrier=retrier, metrics=metrics)
    return ConsumerService(kafka=kafka, settings=settings, handler=handler, scheduler=scheduler,
                           offsets=OffsetTracker(ledger), retrier=retrier, metrics=metrics, listeners=[ledger],
                           commit_interval_seconds=commit_interval_seconds, stall_after_seconds=stall_after_seconds,
                           consumer_factory=consumer_factory, resources=[ledger], health=[ledger],
                           background=background)
