"""Which channel implementation serves each channel name, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from activities.channels import Channel
from activities.outbox import OutboxChannel
from devstack.cache import cache_dir
from eventflow import settings as config


def outbox_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$EVENTFLOW_OUTBOX_PATH`` or ``<cache>/outbox.jsonl``."""
    raw = config.read("EVENTFLOW_OUTBOX_PATH", environ)
    return Path(str(raw)) if raw else cache_dir() / "outbox.jsonl"


def build_channels(environ: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """The channel for each of ``email``, ``sms`` and ``whatsapp``."""
    env = os.environ if environ is None else environ
    outbox = OutboxChannel(outbox_path(env))
    return {"email": outbox, "sms": outbox, "whatsapp": outbox}
