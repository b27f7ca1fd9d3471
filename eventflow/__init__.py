"""Eventflow: customer events on Kafka become durable customer journeys on Temporal.

`core` is the floor (errors, settings, logging, ops HTTP, the Temporal client, tracing);
the rest of this package is the roof: the CLI, the worker process, the demo and Temporal setup.
"""

from core.errors import ConfigError, EventflowError

__all__ = ["ConfigError", "EventflowError"]
