"""``eventflow preferences``: the hosted preference center, one-click unsubscribe and the JSON API."""

from eventflow.preferences.app import PreferenceCenter
from eventflow.preferences.server import run_preferences

__all__ = ["PreferenceCenter", "run_preferences"]
