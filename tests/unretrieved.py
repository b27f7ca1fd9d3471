"""A fixture that catches outcomes nobody read: asyncio's "Future/Task exception was never retrieved".

Such an error is an owner missing: a failure that happened and that no code retried, reported or
cancelled. asyncio reports one to the loop's exception handler when the future is garbage-collected,
so the fixture collects garbage before it looks.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

#: asyncio's messages for a future or task whose exception nobody read.
UNRETRIEVED = ("Future exception was never retrieved", "Task exception was never retrieved")


class Unretrieved:
    """The unread errors seen since the fixture started."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def messages(self) -> list[str]:
        """Collects garbage (so dropped futures report) and returns what was seen since the last call,
        each with its error's repr."""
        gc.collect()
        seen, self.seen = self.seen, []
        return [f"{context['message']}: {context.get('exception')!r}" for context in seen]


@pytest.fixture
async def unretrieved() -> AsyncIterator[Unretrieved]:
    """Catches unread future and task errors on the test's loop; fails the test on any left at its end."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    caught = Unretrieved()

    def handler(handler_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(UNRETRIEVED):
            caught.seen.append(context)
        if previous is not None:
            previous(handler_loop, context)
        else:
            handler_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield caught
        assert caught.messages() == [], "an outcome nobody awaited (see asyncio's messages)"
    finally:
        loop.set_exception_handler(previous)
