"""``eventflow customers forget ID``: end a customer's journeys, delete their profile and preferences, leave a tombstone.

In this order, so nothing new starts while the rest is removed:

1. start the customer's tombstone (`workflows.tombstone`): from now on the consumer starts no
   journey and records no profile for the id until an identify event ends it;
2. end the customer's running journeys, found in the customer store's journey instances
   (`store.journey_instances`, where a consumer with a store records each journey it starts) and in
   visibility by the ``CustomerId`` search attribute journeys started without a store, or before
   it, carry (any id the consumer accepts, quotes and backslashes included: see
   `eventflow.commands._visibility`), and delete every execution of them and every run of
   the customer's preferences workflow (profile, opt-outs, delivery ledger) with
   DeleteWorkflowExecution, so their histories are gone and not merely closed. The server
   terminates a running workflow before deleting it. Terminate, not cancel: a cancelled journey
   would run on until its next await (possibly a send); a terminated one runs no more workflow
   code. A send activity already running is not waited for: its heartbeat is refused and it
   stops (at worst one message that was already with the provider);
3. remove the customer from the ``AddressContacts`` workflows of their addresses (the customer <->
   address-hash links STOP/START forwarding uses): the addresses are the profile's phone and
   WhatsApp numbers (from the preferences workflow and, with a customer store, from the store,
   read before it is erased), hashed in every form (`activities.addresses.AddressHasher.forms`),
   and the hashes of the customer's suppressions. Each such workflow drops the customer and
   continues as new at once; its closed runs, whose histories held the customer's id, are deleted.

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
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.addresses import PHONE_CHANNELS, UNKEYED, AddressHasher, address_hasher
from activities.contact import ContactPoints
from core.errors import EventflowError
from eventflow.commands._visibility import customer_runs, workflow_runs
from store import CustomerStore, FieldCipher, open_store
from store.forgetting import StoreErasure
from store.forgetting import forget as forget_in_store
from store.journey_instances import JourneyInstances
from workflows.address_book import FORGET_OWNER_SIGNAL, OWNERS_QUERY, ForgetOwner, address_workflow_id
from workflows.preferences import CustomerPreferences, PreferencesInput, preferences_workflow_id
from workflows.suppression import Suppression
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
        address_links: ``AddressContacts`` workflows the customer was removed from.
        address_links_pending: of those, the ones no worker had processed the removal of yet (it
            happens when a worker runs; their earlier runs stay until the namespace's retention ends).
        deletion_refused: the server refused DeleteWorkflowExecution: histories stay until retention.
    """

    customer_id: str
    tombstone_id: str
    journeys_ended: list[str] = field(default_factory=list)
    executions_deleted: int = 0
    profile_fields: list[str] = field(default_factory=list)
    channel_preferences: int = 0
    ledger_entries: int = 0
    address_links: int = 0
    address_links_pending: list[str] = field(default_factory=list)
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
            f"address links removed: {self.address_links}"
            + (f" ({len(self.address_links_pending)} wait for a worker to apply it; their earlier runs stay until the "
               "namespace's retention ends)"
               if self.address_links_pending else ""),
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
                          tombstone_unknown: bool = False, hasher: AddressHasher = UNKEYED,
                          contacts: Sequence[ContactPoints] = (), journeys: Sequence[str] = ()) -> ForgetReport:
    """Forgets one customer (see the module docstring); safe to run again for the same id.

    An id nothing is known of (a typo, most likely) gets no tombstone unless ``tombstone_unknown``:
    the report says it is unknown.

    Args:
        hasher: the processes' address hasher (their ``EVENTFLOW_ADDRESS_HASH_*``), to find the
            address links under every key.
        contacts: contact points known elsewhere (the customer store's profile, read before erasing it).
        journeys: workflow ids of the customer's journeys known elsewhere (the customer store's journey instances).
    """
    if not customer_id:
        raise InvalidCustomerIdError(customer_id)
    report = ForgetReport(customer_id, tombstone_workflow_id(customer_id))
    if not tombstone_unknown and not journeys and not await _known(client, customer_id, report.tombstone_id):
        report.unknown = True
        return report
    await client.start_workflow(
        CustomerTombstone.run, TombstoneInput(customer_id, datetime.now(UTC).isoformat()),
        id=report.tombstone_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    # Twice: a journey started just before the tombstone may reach visibility a moment late.
    for _ in range(2):
        await _forget_journeys(client, customer_id, report)
    for workflow_id in journeys:
        await _forget_journey(client, workflow_id, report)
    state = await _forget_preferences(client, customer_id, report)
    links = _address_links(hasher, [*contacts, *([state.profile.contact_points()] if state else [])],
                           state.suppressions.values() if state else ())
    await _forget_address_links(client, customer_id, links, report)
    return report


def _address_links(hasher: AddressHasher, contacts: Iterable[ContactPoints],
                   suppressions: Iterable[Suppression]) -> dict[str, tuple[str, str]]:
    """The ``AddressContacts`` workflow ids the customer may be linked from, with their channel and hash."""
    links: dict[str, tuple[str, str]] = {}
    hashes = {(s.channel, s.address_hash) for s in suppressions if s.address_hash}
    for points in contacts:
        for phone_channel in PHONE_CHANNELS:
            # A number may have reached either channel (WhatsApp falls back to the phone): both are tried.
            for address in {points.phone, points.whatsapp} - {None, ""}:
                hashes.update((phone_channel, form) for form in hasher.forms(phone_channel, str(address)))
    for channel, hashed in hashes:
        if channel in PHONE_CHANNELS:
            links[address_workflow_id(channel, hashed)] = (channel, hashed)
    return links


async def _forget_address_links(client: Client, customer_id: str, links: Mapping[str, tuple[str, str]],
                                report: ForgetReport) -> None:
    for workflow_id in sorted(links):
        handle = client.get_workflow_handle(workflow_id)
        try:
            owners: list[str] = await handle.query(OWNERS_QUERY, result_type=list[str])
            if customer_id not in owners:
                continue
            before = (await handle.describe()).run_id
            await handle.signal(FORGET_OWNER_SIGNAL, ForgetOwner(customer_id))
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:  # no such address workflow, or it has ended
                continue
            raise
        report.address_links += 1
        # The runs up to the forget hold the customer's id in their signals. Once the workflow has
        # continued as new (a worker must run it), they are closed and deleted; the new run holds no
        # trace of the customer.
        current = await _next_run(client, workflow_id, before)
        if current is None:
            report.address_links_pending.append(workflow_id)
            continue
        closed = {before}
        async for execution in workflow_runs(client, workflow_id):
            if execution.run_id != current and execution.status is not WorkflowExecutionStatus.RUNNING:
                closed.add(execution.run_id)
        for run_id in sorted(closed - report._runs_seen):
            report._runs_seen.add(run_id)
            await _delete(client, workflow_id, run_id, report, running=False)


async def _next_run(client: Client, workflow_id: str, run_id: str, timeout_seconds: float = 10.0) -> str | None:
    """The run after ``run_id`` once the workflow has continued as new; None if it has not within the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        current = (await client.get_workflow_handle(workflow_id).describe()).run_id
        if current != run_id:
            return current
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.1)


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
    async for _ in customer_runs(client, customer_id, "Journey"):
        return True
    return False


async def _forget_journeys(client: Client, customer_id: str, report: ForgetReport) -> None:
    async for execution in customer_runs(client, customer_id, "Journey"):
        if execution.run_id in report._runs_seen:
            continue
        report._runs_seen.add(execution.run_id)
        running = execution.status is WorkflowExecutionStatus.RUNNING
        if running:
            report.journeys_ended.append(execution.id)
        await _delete(client, execution.id, execution.run_id, report, running=running)


async def _forget_journey(client: Client, workflow_id: str, report: ForgetReport) -> None:
    """Deletes every run of one journey the store names: the current one read directly (visibility may
    not list a journey started a moment ago yet), the earlier ones listed."""
    runs: dict[str, bool] = {}
    try:
        current = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:  # never started (the row precedes its start), or deleted
            raise
    else:
        runs[current.run_id] = current.status is WorkflowExecutionStatus.RUNNING
    async for execution in workflow_runs(client, workflow_id):
        runs.setdefault(execution.run_id, execution.status is WorkflowExecutionStatus.RUNNING)
    for run_id, running in sorted(runs.items()):
        if run_id in report._runs_seen:
            continue
        report._runs_seen.add(run_id)
        if running:
            report.journeys_ended.append(workflow_id)
        await _delete(client, workflow_id, run_id, report, running=running)


async def _forget_preferences(client: Client, customer_id: str, report: ForgetReport) -> PreferencesInput | None:
    """Deletes every run of the customer's preferences; returns their state as it was, if there was one."""
    workflow_id = preferences_workflow_id(customer_id)
    handle = client.get_workflow_handle(workflow_id)
    state: PreferencesInput | None = None
    try:
        state = await handle.query(CustomerPreferences.state)
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    else:
        report.profile_fields = state.profile.field_names()
        report.channel_preferences = len(state.channels)
        report.ledger_entries = len(state.ledger)
    async for execution in workflow_runs(client, workflow_id):
        if execution.run_id in report._runs_seen:
            continue
        report._runs_seen.add(execution.run_id)
        await _delete(client, execution.id, execution.run_id, report,
                      running=execution.status is WorkflowExecutionStatus.RUNNING)
    return state


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
        hasher = address_hasher(tools.addresses)
        contacts: list[ContactPoints] = []
        pool = await open_store(tools.database)
        try:
            if pool is not None:
                # Its numbers first (decrypted in memory only), to find the address links in Temporal after.
                try:
                    contacts.append(await CustomerStore(pool, FieldCipher(settings.temporal.payload_keyring()))
                                    .contact_points(args.customer_id))
                except (LookupError, InvalidTag):
                    # A field sealed with a key this command lacks: the erasure must not wait for it;
                    # links are still found from the preferences workflow and the suppressions.
                    print("eventflow: the profile's numbers could not be decrypted (a payload key is missing); "
                          "address links are looked up from the other stores only", file=sys.stderr)
                # The store first, in one transaction with its tombstone: nothing new starts meanwhile.
                erasure = await forget_in_store(pool, args.customer_id, tombstone_unknown=args.tombstone_unknown)
            client = await connect(settings.temporal)
            report = await forget_customer(client, customer_id=args.customer_id,
                                           task_queue=settings.temporal.task_queue,
                                           tombstone_unknown=args.tombstone_unknown or bool(erasure and erasure.known),
                                           hasher=hasher, contacts=contacts,
                                           journeys=erasure.journeys if erasure else ())
            if pool is not None:
                # Only now that their executions are gone: a forget stopped before this finds them again.
                await JourneyInstances(pool).forget(args.customer_id)
        finally:
            if pool is not None:
                await pool.close()
        return report, erasure

    report, erasure = asyncio.run(run())
    if erasure is not None and erasure.known:
        report.unknown = False
    print("\n".join(report.lines()))
    if erasure is not None and (erasure.known or args.tombstone_unknown):
        print(erasure.summary())
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
