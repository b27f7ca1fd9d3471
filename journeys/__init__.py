"""Journeys as data: definitions in ``definitions/``, templates in ``templates/``, and their model."""

from journeys.expressions import ExpressionMetrics
from journeys.loader import (
    JourneyDefinitionError,
    Problem,
    ValidationReport,
    default_journeys_dir,
    load_all,
    validate_folder,
)
from journeys.model import EntryRule, JourneyDefinition, JourneySnapshot, Listener, Template, decode_snapshot
from journeys.routing import Action, Router, SignalJourney, StartJourney, instance_id

__all__ = [
    "Action",
    "EntryRule",
    "ExpressionMetrics",
    "JourneyDefinition",
    "JourneyDefinitionError",
    "JourneySnapshot",
    "Listener",
    "Problem",
    "Router",
    "SignalJourney",
    "StartJourney",
    "Template",
    "ValidationReport",
    "decode_snapshot",
    "default_journeys_dir",
    "instance_id",
    "load_all",
    "validate_folder",
]
