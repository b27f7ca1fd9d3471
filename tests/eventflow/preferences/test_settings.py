"""What ``eventflow preferences`` and the worker refuse to start with, naming the variable."""

from __future__ import annotations

import base64

import pytest

from core.errors import ConfigError
from eventflow.settings import load_preferences, load_worker

KEYS = "k1=" + base64.b64encode(b"s" * 32).decode()
DB = "postgresql://eventflow:eventflow@127.0.0.1:1/eventflow"


@pytest.mark.parametrize(("environ", "variable"), [
    ({"EVENTFLOW_DATABASE_URL": DB}, "EVENTFLOW_PREFERENCES_SIGNING_KEYS"),
    ({"EVENTFLOW_PREFERENCES_SIGNING_KEYS": "k1=c2hvcnQ="}, "EVENTFLOW_PREFERENCES_SIGNING_KEYS"),
    ({"EVENTFLOW_PREFERENCES_SIGNING_KEYS": KEYS, "EVENTFLOW_PREFERENCES_API_TOKEN": "short",
      "EVENTFLOW_DATABASE_URL": DB}, "EVENTFLOW_PREFERENCES_API_TOKEN"),
    ({"EVENTFLOW_PREFERENCES_SIGNING_KEYS": KEYS, "EVENTFLOW_PREFERENCES_SIGNING_KEY_ID": "k2",
      "EVENTFLOW_DATABASE_URL": DB}, "EVENTFLOW_PREFERENCES_SIGNING_KEY_ID"),
    ({"EVENTFLOW_PREFERENCES_SIGNING_KEYS": KEYS, "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
      "TEMPORAL_ADDRESS": "t:7233"}, "EVENTFLOW_DATABASE_URL"),
])
def test_the_preference_center_names_what_is_missing_or_wrong(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_preferences(environ)
    assert refused.value.variable == variable


def test_the_worker_signs_links_only_with_keys() -> None:
    with pytest.raises(ConfigError) as refused:
        load_worker({"EVENTFLOW_PREFERENCES_PUBLIC_URL": "https://prefs.example.com"})
    assert refused.value.variable == "EVENTFLOW_PREFERENCES_SIGNING_KEYS"
    worker = load_worker({"EVENTFLOW_PREFERENCES_PUBLIC_URL": "https://prefs.example.com",
                          "EVENTFLOW_PREFERENCES_SIGNING_KEYS": KEYS})
    assert worker.preference_links.keys() is not None
