"""A workflow that logs from inside the sandbox, then fails its workflow task (not its run).

Its own module, importing only the SDK: the sandbox re-imports a workflow's module on every run.
"""

from __future__ import annotations

from temporalio import workflow


class Unserialisable:
    """A value JSON cannot encode: structlog's own fallback for it imported a module lazily."""

    def __repr__(self) -> str:
        return "<unserialisable>"


@workflow.defn(name="LogsThenFailsItsTask", sandboxed=True)
class LogsThenFailsItsTask:
    """Logs a line with an address and an odd extra, then raises a plain error (a task failure)."""

    @workflow.run
    async def run(self, customer_email: str) -> None:
        workflow.logger.info("about to fail for %s", customer_email, extra={"odd": Unserialisable()})
        raise RuntimeError(f"workflow task bug while handling {customer_email}")
