"""The floor every Eventflow package builds on: errors, settings, logging, the ops HTTP server, the
Temporal client and tracing. It imports no other Eventflow package (tests/test_layers.py)."""

from core.errors import ConfigError, EventflowError

__all__ = ["ConfigError", "EventflowError"]
