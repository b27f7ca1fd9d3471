"""Journeys as data: definitions in ``definitions/``, templates in ``templates/``, and their model."""

from journeys.loader import (
    JourneyDefinitionError,
    Problem,
    ValidationReport,
    default_journeys_dir,
    load_all,
    validate_folder,
)
from journeys.model import EntryRule, JourneyDefinition, Listener, Template
from journeys.routing import Action, Router, SignalJourney, StartJourney, instance_id

__all__ = [
    "Action",
    "EntryRule",
    "JourneyDefinition",
    "JourneyDefinitionError",
    "Listener",
    "Problem",
    "Router",
    "SignalJourney",
    "StartJourney",
    "Template",
    "ValidationReport",
    "default_journeys_dir",
    "instance_id",
    "load_all",
    "validate_folder",
]
