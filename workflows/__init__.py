"""Temporal workflows: the generic journey interpreter."""

from workflows.journey import (
    EVENT_SIGNAL,
    JOURNEY_WORKFLOW,
    STATUS_QUERY,
    JourneyInput,
    JourneyState,
    JourneyStatus,
    JourneyWorkflow,
    StepVisit,
    split_bucket,
)
from workflows.sending import SendRecord

__all__ = [
    "EVENT_SIGNAL",
    "JOURNEY_WORKFLOW",
    "STATUS_QUERY",
    "JourneyInput",
    "JourneyState",
    "JourneyStatus",
    "JourneyWorkflow",
    "SendRecord",
    "StepVisit",
    "split_bucket",
]
