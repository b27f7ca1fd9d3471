"""The tombstone of a forgotten customer: while it runs, that customer's events start nothing.

``eventflow customers forget ID`` starts ``CustomerTombstone`` (workflow id ``tombstone:{id}``)
after deleting the customer's journeys, profile and preferences. The consumer asks the server
whether it runs (a describe, which no worker answers and which writes no history) before it
starts a journey or records a profile for a non-identify event; an identify event ends it
(terminate, which takes effect before the call returns, so the very next event of the customer
already starts journeys again). Its history holds the customer id and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

TOMBSTONE_WORKFLOW = "CustomerTombstone"


def tombstone_workflow_id(customer_id: str) -> str:
    """The workflow id of a customer's tombstone."""
    return f"tombstone:{customer_id}"


@dataclass(frozen=True)
class TombstoneInput:
    """Start input: whose tombstone, and when they were forgotten (ISO 8601 UTC)."""

    customer_id: str
    forgotten_at: str = ""


@workflow.defn(name=TOMBSTONE_WORKFLOW)
class CustomerTombstone:
    """Runs until an identify event for the customer ends it; does nothing else."""

    @workflow.run
    async def run(self, start: TombstoneInput) -> None:
        await workflow.wait_condition(lambda: False)
