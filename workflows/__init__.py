"""Temporal workflows: the generic journey interpreter."""

from workflows.journey import (
    EVENT_SIGNAL,
    JOURNEY_WORKFLOW,
    STATUS_QUERY,
    JourneyInput,
    JourneyStatus,
    JourneyWorkflow,
)
from workflows.sending import SendRecord

__all__ = [
    "EVENT_SIGNAL",
    "JOURNEY_WORKFLOW",
    "STATUS_QUERY",
    "JourneyInput",
    "JourneyStatus",
    "JourneyWorkflow",
    "SendRecord",
]
