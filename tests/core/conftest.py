"""Log capture shared by the logging tests: JSON lines of the real pipeline, restored afterwards."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from core import logs


@pytest.fixture
def captured() -> Iterator[Callable[[], list[dict[str, object]]]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("json", stream=stream)

    def read() -> list[dict[str, object]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
