"""Visibility list filters for one customer id, whatever characters the id holds.

A list filter's string literal cannot carry every id. Measured on the Temporal dev server (and
described in temporalio/temporal PR 12019): an equality on a value holding a double quote, a
backslash or a control character matches nothing whichever escaping is used, and the server
strips *every* leading and trailing single quote from a literal, so ``CustomerId = '''q'''``
matches customer ``q``, not ``'q'``. So an id holding none of these characters gets the exact
equality (single quotes need no escaping then: there are none); any other id is looked up by its
longest safe prefix (``STARTS_WITH``, or the whole type when the id starts with such a character)
and the results are filtered here to the exact id: `customer_runs` and `workflow_runs` list only
exact matches (the filters alone are a superset, never the answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from temporalio.client import Client, WorkflowExecution
from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")


def _safe_prefix(text: str) -> str:
    for index, char in enumerate(text):
        if char in "'\"\\" or not char.isprintable():
            return text[:index]
    return text


def customer_filter(customer_id: str, workflow_type: str | None = None) -> str:
    """A list filter matching at least every execution (of ``workflow_type``, if given) whose ``CustomerId`` is ``customer_id``."""
    safe = _safe_prefix(customer_id)
    clauses = [f"CustomerId = '{customer_id}'" if safe == customer_id
               else f"CustomerId STARTS_WITH '{safe}'" if safe else "CustomerId IS NOT NULL"]
    if workflow_type is not None:
        clauses.append(f"WorkflowType = '{workflow_type}'")
    return " AND ".join(clauses)


def workflow_id_filter(workflow_id: str) -> str:
    """A list filter matching at least every execution of ``workflow_id``."""
    safe = _safe_prefix(workflow_id)
    return f"WorkflowId = '{workflow_id}'" if safe == workflow_id else f"WorkflowId STARTS_WITH '{safe}'"


def is_customer(execution: WorkflowExecution, customer_id: str) -> bool:
    """Whether ``execution`` carries exactly ``customer_id`` (the filter may list more)."""
    return execution.typed_search_attributes.get(CUSTOMER_ID) == customer_id


def is_workflow(execution: WorkflowExecution, workflow_id: str) -> bool:
    """Whether ``execution`` is of exactly ``workflow_id``."""
    return execution.id == workflow_id


async def customer_runs(client: Client, customer_id: str, workflow_type: str | None = None,
                        ) -> AsyncIterator[WorkflowExecution]:
    """Every execution (of ``workflow_type``, if given) whose ``CustomerId`` is exactly ``customer_id``."""
    async for execution in client.list_workflows(customer_filter(customer_id, workflow_type)):
        if is_customer(execution, customer_id):
            yield execution


async def workflow_runs(client: Client, workflow_id: str) -> AsyncIterator[WorkflowExecution]:
    """Every execution (run) of exactly ``workflow_id``."""
    async for execution in client.list_workflows(workflow_id_filter(workflow_id)):
        if is_workflow(execution, workflow_id):
            yield execution
