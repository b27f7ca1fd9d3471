"""Journeys as data: definitions in ``definitions/``, templates in ``templates/``, and their model."""

from journeys.loader import JourneyDefinitionError, default_journeys_dir, load_all
from journeys.model import EntryRule, JourneyDefinition, Listener, Template
from journeys.routing import Action, Router, SignalJourney, StartJourney, instance_id

__all__ = [
    "Action",
    "EntryRule",
    "JourneyDefinition",
    "JourneyDefinitionError",
    "Listener",
    "Router",
    "SignalJourney",
    "StartJourney",
    "Template",
    "default_journeys_dir",
    "instance_id",
    "load_all",
]
