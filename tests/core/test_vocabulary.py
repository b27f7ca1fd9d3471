"""Each vocabulary is defined once in `core.vocabulary`; what cannot import it is held to it here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activities import addresses
from activities.caps import ALL_CHANNELS, SCOPES
from consumer import feedback
from core.settings import ChannelSettings
from core.vocabulary import ADDRESS_FIELD, CHANNELS, PHONE_CHANNELS, ChannelName
from journeys.loader import SCHEMA_PATH
from workflows.queues import send_task_queue

# Any run of known or lowercase words in a group, so a channel missing from a pattern still shows.
_CHANNEL_WORDS = re.compile(r"\(((?:email)(?:\|[a-z_]+)*)\)")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_journey_schema_names_exactly_the_vocabulary_channels() -> None:
    schema = json.loads(Path(SCHEMA_PATH).read_text())
    enums = [value for key, value in _walk(schema) if key == "enum" and "email" in value]
    assert enums, "the schema lists channels somewhere"
    for listed in enums:
        assert set(listed) - {ALL_CHANNELS} == set(CHANNELS), listed
    patterns = [value for key, value in _walk(schema) if key == "pattern" and "email" in value]
    for pattern in patterns:
        for group in _CHANNEL_WORDS.findall(pattern):
            assert set(group.split("|")) - {ALL_CHANNELS} == set(CHANNELS), pattern


def test_caps_scopes_queues_settings_and_addresses_derive_from_the_vocabulary() -> None:
    assert SCOPES == (*CHANNELS, ALL_CHANNELS)
    assert len({send_task_queue("q", channel) for channel in CHANNELS}) == len(CHANNELS)
    assert set(ADDRESS_FIELD) == set(ChannelName)
    for channel in CHANNELS:
        assert ChannelSettings().provider(channel)


def test_phone_channels_are_those_addressed_by_a_phone_field_and_nobody_lists_them_again() -> None:
    assert PHONE_CHANNELS == {ChannelName.SMS, ChannelName.WHATSAPP}
    assert addresses.PHONE_CHANNELS is PHONE_CHANNELS
    assert feedback._KEYWORD_CHANNELS is PHONE_CHANNELS
    assert "sms" in PHONE_CHANNELS and "email" not in PHONE_CHANNELS  # plain strings from records match


#: Where the channel list may be spelled out besides `core.vocabulary.ChannelName`: files that cannot import it,
#: each held to it by a test (the schema above, the chart's worker scaler in tests/helm/test_worker_scaling.py).
_SPELLED_OUT = {"journeys/journey.schema.json", "helm/eventflow/templates/keda-worker.yaml"}
_LISTED = re.compile(r"email\W{1,8}sms\W{1,8}whatsapp")


def test_the_channel_list_is_written_once_in_the_source() -> None:
    root = Path(__file__).resolve().parents[2]
    found = {str(path.relative_to(root)) for folder in ("core", "events", "activities", "journeys", "workflows",
                                                         "store", "consumer", "devstack", "eventflow", "bench", "helm")
             for path in (root / folder).rglob("*") if path.suffix in (".py", ".json", ".yaml", ".tpl", ".avsc")
             and "__pycache__" not in path.parts and _LISTED.search(path.read_text())}
    assert found <= _SPELLED_OUT, found - _SPELLED_OUT  # everything else derives from ChannelName
