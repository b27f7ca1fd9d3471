"""``eventflow db migrate|status|import``: the customer store's schema and the one-time copy from Temporal.

``migrate`` applies the schema migrations (idempotent; the chart runs it as a hook Job). ``import``
copies every ``CustomerPreferences``, ``AddressContacts`` and ``CustomerTombstone`` workflow's state
into the store (idempotent and resumable: run it again after an interruption) and then closes those
workflows, since nothing reads them once processes run with ``EVENTFLOW_DATABASE_URL``
(docs/deploy.md, "Upgrading to the customer store").
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass
from typing import TypeVar

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.addresses import address_hasher
from core.errors import ConfigError
from core.settings import DatabaseSettings
from core.temporal_client import connect
from eventflow.settings import load_tools
from store import CustomerStore, FieldCipher, open_store
from store.importing import import_address, import_preferences, import_tombstone
from store.migrate import current_revision, migrate
from store.schema import required_revision
from workflows.address_book import ADDRESS_CONTACTS_WORKFLOW, AddressInput
from workflows.preferences import PREFERENCES_WORKFLOW, STATE_QUERY, PreferencesInput
from workflows.tombstone import TOMBSTONE_WORKFLOW

_T = TypeVar("_T")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")
_CLOSE_REASON = "state imported into the customer store (eventflow db import)"


def _dsn(database: DatabaseSettings) -> str:
    dsn = database.dsn()
    if dsn is None:
        raise ConfigError(DatabaseSettings.variable("url"), "is not set: no customer store to act on")
    return dsn


def _migrate(_: argparse.Namespace) -> int:
    revision = asyncio.run(migrate(_dsn(load_tools().database)))
    print(f"database schema at {revision}")
    return 0


def _status(_: argparse.Namespace) -> int:
    current = asyncio.run(current_revision(_dsn(load_tools().database)))
    needed = required_revision()
    print(f"database schema at {current or 'nothing (empty database)'}; this release needs {needed}")
    return 0 if current == needed else 1


@dataclass
class ImportCounts:
    """What an import copied and closed, by workflow type."""

    preferences: int = 0
    addresses: int = 0
    tombstones: int = 0
    closed: int = 0
    failed: int = 0

    def line(self) -> str:
        return (f"imported {self.preferences} preferences, {self.addresses} address books, {self.tombstones} "
                f"tombstones; closed {self.closed} workflows; {self.failed} failed (run again to retry them)")


async def import_from_temporal(client: Client, store: CustomerStore, *, close: bool = True, progress: bool = False,
                               only_customer: str | None = None) -> ImportCounts:
    """Copies every running per-customer workflow's state into ``store``, then (``close``) terminates it.

    ``only_customer`` limits the copy to one customer's preferences and tombstone (an id of letters,
    digits, ``-``, ``_``, ``.`` and ``:``), for a targeted re-run.
    """
    counts = ImportCounts()
    types = (PREFERENCES_WORKFLOW, TOMBSTONE_WORKFLOW) if only_customer else (
        PREFERENCES_WORKFLOW, ADDRESS_CONTACTS_WORKFLOW, TOMBSTONE_WORKFLOW)
    if only_customer is not None and not _PLAIN_ID.match(only_customer):
        raise ValueError(f"--customer takes a plain id, not {only_customer!r}")
    for workflow_type in types:
        query = f'WorkflowType = "{workflow_type}" AND ExecutionStatus = "Running"'
        if only_customer is not None:
            prefix = "preferences" if workflow_type == PREFERENCES_WORKFLOW else "tombstone"
            query += f' AND WorkflowId = "{prefix}:{only_customer}"'
        async for execution in client.list_workflows(query):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                if workflow_type == PREFERENCES_WORKFLOW:
                    state = await handle.query(STATE_QUERY, result_type=PreferencesInput)
                    await import_preferences(store, state)
                    counts.preferences += 1
                elif workflow_type == ADDRESS_CONTACTS_WORKFLOW:
                    input_ = await _start_input(client, execution.id, execution.run_id, AddressInput)
                    if input_ is not None:
                        await import_address(store, input_.channel, input_.address_hash, list(input_.owners))
                    counts.addresses += 1
                else:
                    await import_tombstone(store, execution.id.removeprefix("tombstone:"),
                                           execution.start_time.isoformat() if execution.start_time else "")
                    counts.tombstones += 1
                if close and execution.status is WorkflowExecutionStatus.RUNNING:
                    await handle.terminate(reason=_CLOSE_REASON)
                    counts.closed += 1
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    counts.failed += 1
            if progress:
                print(f"\r{counts.line()}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return counts


async def _start_input(client: Client, workflow_id: str, run_id: str | None, kind: type[_T]) -> _T | None:
    """The input a run started with (its first history event), for workflows without a state query."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    for event in history.events:
        attributes = event.workflow_execution_started_event_attributes
        if attributes.input.payloads:
            values = await client.data_converter.decode(attributes.input.payloads, [kind])
            found = values[0]
            return found if isinstance(found, kind) else None
    return None


def _import(args: argparse.Namespace) -> int:
    tools = load_tools()
    _dsn(tools.database)

    async def run() -> ImportCounts:
        pool = await open_store(tools.database)
        assert pool is not None
        try:
            client = await connect(tools.core.temporal)
            store = CustomerStore(pool, FieldCipher(tools.core.temporal.payload_keyring()),
                                  hasher=address_hasher(tools.addresses))
            return await import_from_temporal(client, store, close=not args.keep, progress=sys.stderr.isatty())
        finally:
            await pool.close()

    counts = asyncio.run(run())
    print(counts.line())
    return 1 if counts.failed else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``db migrate``, ``db status`` and ``db import``."""
    db = commands.add_parser("db", help="the customer store: migrate (schema), status, import (from Temporal)")
    actions = db.add_subparsers(dest="db_action", required=True)
    actions.add_parser("migrate", help="apply the schema migrations (idempotent)").set_defaults(handler=_migrate)
    actions.add_parser("status", help="the schema revision, and whether this release can run on it "
                                      "(exit 1 when not)").set_defaults(handler=_status)
    importing = actions.add_parser("import", help="copy the per-customer workflows' state into the store, "
                                                  "then close them (idempotent, resumable)")
    importing.add_argument("--keep", action="store_true", help="leave the workflows running after the copy")
    importing.set_defaults(handler=_import)
