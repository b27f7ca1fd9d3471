"""The test session's data converter: encrypting when ``EVENTFLOW_PAYLOAD_KEYS`` is set, as in production.

``EVENTFLOW_PAYLOAD_KEYS=k1=$(openssl rand -base64 32) make test`` runs every test's Temporal client
and in-process worker with payload encryption on.
"""

from __future__ import annotations

import os

from temporalio.converter import DataConverter

from core.codec import data_converter
from core.settings import TemporalSettings


def session_data_converter() -> DataConverter:
    """The converter the session's clients use (the default one when no key is set)."""
    settings = TemporalSettings.load({"TEMPORAL_ADDRESS": "unused", **{
        name: value for name, value in os.environ.items() if name.startswith("EVENTFLOW_PAYLOAD_")}})
    return data_converter(settings.payload_keyring())
