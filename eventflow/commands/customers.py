"""``eventflow customers forget ID``: end a customer's journeys, delete their profile and preferences, leave a tombstone.

In this order, so nothing new starts while the rest is removed:

1. start the customer's tombstone (`workflows.tombstone`): from now on the consumer starts no
   journey and records no profile for the id until an identify event ends it;
2. end the customer's running journeys, found in visibility by the ``CustomerId`` search
   attribute every journey is started with (any id the consumer accepts, quotes and backslashes
   included: see `eventflow.commands._visibility`), and delete every execution of them and every run of
   the customer's preferences workflow (profile, opt-outs, delivery ledger) with
   DeleteWorkflowExecution, so their histories are gone and not merely closed. The server
   terminates a running workflow before deleting it. Terminate, not cancel: a cancelled journey
   would run on until its next await (possibly a send); a terminated one runs no more workflow
   code. A send activity already running is not waited for: its heartbeat is refused and it
   stops (at worst one message that was already with the provider).

Deletion is asynchronous on the server: a running workflow's history goes at once, a closed one's
within seconds (about 10-20 s on the dev server). A server that refuses DeleteWorkflowExecution
(no permission) gets the running workflows terminated instead, and keeps their histories until
the namespace's retention period ends: the report says so.

The report names what was deleted: counts, workflow ids and the names of the profile fields,
never their values.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from core.errors import EventflowError
from eventflow.commands._visibility import customer_filter, is_customer, is_workflow, workflow_id_filter
from store import open_store
from store.forgetting import StoreErasure
from store.forgetting import forget as forget_in_store
from workflows.preferences import CustomerPreferences, PreferencesInput, preferences_workflow_id
from workflows.tombstone import CustomerTombstone, TombstoneInput, tombstone_workflow_id

_REFUSED = (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED)
_REASON = "customer forgotten (eventflow customers forget)"


class InvalidCustomerIdError(EventflowError):
    """A customer id no event can carry (the consumer refuses an empty ``customer.id``).

    Attributes:
        customer_id: the id given.
    """

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer id {customer_id!r} is empty")
        self.customer_id = customer_id


@dataclass
class ForgetReport:
    """What `forget_customer` did.

    Attributes:
        journeys_ended: workflow ids of the journeys that were running and were terminated.
        executions_deleted: journey and preferences executions (runs) whose deletion the server accepted.
        profile_fields: names of the profile fields that held a value.
        channel_preferences, ledger_entries: how many opt-out records and ledger entries were deleted.
        deletion_refused: the server refused DeleteWorkflowExecution: histories stay until retention.
    """

    customer_id: str
    tombstone_id: str
    journeys_ended: list[str] = field(default_factory=list)
    executions_deleted: int = 0
    profile_fields: list[str] = field(default_factory=list)
    channel_preferences: int = 0
    ledger_entries: int = 0
    deletion_refused: bool = False
    #: Nothing was known of the id (no journey, preferences or tombstone): nothing was done.
    unknown: bool = False
    _runs_seen: set[str] = field(default_factory=set, repr=False)

    def lines(self) -> list[str]:
        """The report for people."""
        if self.unknown:
            return [f"customer {self.customer_id} is unknown: no journeys, profile, preferences or tombstone; nothing "
                    "deleted and no tombstone left (--tombstone-unknown leaves one, so later events for this id "
                    "start nothing)"]
        ended = ", ".join(self.journeys_ended) or "none running"
        fields = ", ".join(self.profile_fields) or "none"
        lines = [
            f"customer {self.customer_id} forgotten",
            f"journeys terminated: {len(self.journeys_ended)} ({ended})",
            f"profile deleted: fields {fields}",
            f"preferences deleted: {self.channel_preferences} channel preferences, {self.ledger_entries} ledger entries",
            f"workflow executions deleted: {self.executions_deleted}",
            f"tombstone: {self.tombstone_id} (later events for this id start nothing until an identify event)",
        ]
        if self.deletion_refused:
            lines.append("the server refused DeleteWorkflowExecution: terminated histories stay readable until "
                         "the namespace's retention period ends")
        else:
            lines.append("histories are deleted by the server: a running workflow's at once, a closed one's "
                         "within seconds")
        return lines


async def forget_customer(client: Client, *, customer_id: str, task_queue: str,
                          tombstone_unknown: bool = False) -> ForgetReport:
    """Forgets one customer (see the module docstring); safe to run again for the same id.

    An id nothing is known of (a typo, most likely) gets no tombstone unless ``tombstone_unknown``:
    the report says it is unknown.
    """
    if not customer_id:
        raise InvalidCustomerIdError(customer_id)
    report = ForgetReport(customer_id, tombstone_workflow_id(customer_id))
    if not tombstone_unknown and not await _known(client, customer_id, report.tombstone_id):
        report.unknown = True
        return report
    await client.start_workflow(
        CustomerTombstone.run, TombstoneInput(customer_id, datetime.now(UTC).isoformat()),
        id=report.tombstone_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    # Twice: a journey started just before the tombstone may reach visibility a moment late.
    for _ in range(2):
        await _forget_journeys(client, customer_id, report)
    await _forget_preferences(client, customer_id, report)
    return report


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _known(client: Client, customer_id: str, tombstone_id: str) -> bool:
    """Whether the id has preferences, a tombstone (read directly) or a journey (through visibility)."""
    if await _exists(client, preferences_workflow_id(customer_id)) or await _exists(client, tombstone_id):
        return True
    async for execution in client.list_workflows(customer_filter(customer_id, "Journey")):
        if is_customer(execution, customer_id):
            return True
    return False


async def _forget_journeys(client: Client, customer_id: str, report: ForgetReport) -> None:
    async for execution in client.list_workflows(customer_filter(customer_id, "Journey")):
        if not is_customer(execution, customer_id) or execution.run_id in report._runs_seen:
            continue
        report._runs_seen.add(execution.run_id)
        running = execution.status is WorkflowExecutionStatus.RUNNING
        if running:
            report.journeys_ended.append(execution.id)
        await _delete(client, execution.id, execution.run_id, report, running=running)


async def _forget_preferences(client: Client, customer_id: str, report: ForgetReport) -> None:
    workflow_id = preferences_workflow_id(customer_id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        state: PreferencesInput = await handle.query(CustomerPreferences.state)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    else:
        report.profile_fields = state.profile.field_names()
        report.channel_preferences = len(state.channels)
        report.ledger_entries = len(state.ledger)
    async for execution in client.list_workflows(workflow_id_filter(workflow_id)):
        if not is_workflow(execution, workflow_id) or execution.run_id in report._runs_seen:
            continue
        report._runs_seen.add(execution.run_id)
        await _delete(client, execution.id, execution.run_id, report,
                      running=execution.status is WorkflowExecutionStatus.RUNNING)


async def _terminate(client: Client, workflow_id: str, run_id: str) -> None:
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason=_REASON)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:  # it ended meanwhile
            raise


async def _delete(client: Client, workflow_id: str, run_id: str, report: ForgetReport, *, running: bool) -> None:
    if report.deletion_refused:
        if running:
            await _terminate(client, workflow_id, run_id)
        return
    try:
        await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)))
    except RPCError as err:
        if err.status in _REFUSED:
            report.deletion_refused = True
            if running:
                await _terminate(client, workflow_id, run_id)
            return
        if err.status is RPCStatusCode.NOT_FOUND:  # deleted already (a second forget, or the first pass)
            return
        raise
    report.executions_deleted += 1


def _forget(args: argparse.Namespace) -> int:
    from core.temporal_client import connect
    from eventflow.settings import load_tools

    tools = load_tools()
    settings = tools.core

    async def run() -> tuple[ForgetReport, StoreErasure | None]:
        erasure = None
        pool = await open_store(tools.database)
        if pool is not None:
            try:
                # The store first, in one transaction with its tombstone: nothing new starts meanwhile.
                erasure = await forget_in_store(pool, args.customer_id, tombstone_unknown=args.tombstone_unknown)
            finally:
                await pool.close()
        client = await connect(settings.temporal)
        report = await forget_customer(client, customer_id=args.customer_id, task_queue=settings.temporal.task_queue,
                                       tombstone_unknown=args.tombstone_unknown or bool(erasure and erasure.known))
        return report, erasure

    report, erasure = asyncio.run(run())
    if erasure is not None and erasure.known:
        report.unknown = False
    print("\n".join(report.lines()))
    if erasure is not None and (erasure.known or args.tombstone_unknown):
        print(f"customer store: profile fields {', '.join(erasure.profile_fields) or 'none'}; "
              f"{erasure.consent_rows} consent records, {erasure.sends} sends, {erasure.addresses} address links, "
              f"{erasure.journey_events} funnel events, {erasure.whatsapp_windows} WhatsApp windows deleted; "
              "tombstone recorded")
    return 1 if report.unknown else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``customers forget``."""
    customers = commands.add_parser("customers", help="customer data: forget (right to erasure)")
    actions = customers.add_subparsers(dest="customers_action", title="commands", metavar="COMMAND")
    forget = actions.add_parser("forget", help="end a customer's journeys, delete profile and preferences, "
                                               "leave a tombstone")
    forget.add_argument("customer_id", metavar="ID", help="the customer id")
    forget.add_argument("--tombstone-unknown", action="store_true",
                        help="leave a tombstone even when nothing is known of the id (e.g. its events are "
                             "still on their way)")
    forget.set_defaults(handler=_forget)
