"""The preference center's words cover the vocabulary: a channel without a name in a language breaks its page."""

from __future__ import annotations

from core.vocabulary import CHANNELS
from eventflow.preferences.texts import TEXTS, Language


def test_every_language_names_every_channel() -> None:
    for language in Language:
        missing = [channel for channel in CHANNELS if not TEXTS[language].get(channel)]
        assert not missing, (language, missing)
