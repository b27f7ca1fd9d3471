"""Eventflow: customer events on Kafka become durable customer journeys on Temporal."""

from eventflow.errors import ConfigError, EventflowError

__all__ = ["ConfigError", "EventflowError"]
