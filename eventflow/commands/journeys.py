"""``eventflow journeys`` subcommands: validate, simulate, show, status, report, and the catalog's (publish, list, ...)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import DatabaseSettings
    from journeys.model import JourneyDefinition
    from journeys.report import InstanceView
    from workflows.journey import JourneyStatus


def _folder(args: argparse.Namespace) -> Path | None:
    return Path(args.dir) if args.dir else None


def _validate(args: argparse.Namespace) -> int:
    from core.settings import WebhookStepSettings
    from journeys.catalog import content_hash
    from journeys.loader import validate_folder
    from journeys.segments import check_segments

    report = validate_folder(_folder(args), allowed_hosts=WebhookStepSettings.load().allowed_hosts)
    segments, segment_problems = check_segments(_folder(args))
    problems = [*report.problems, *segment_problems]
    for problem in problems:
        print(problem, file=sys.stderr)
    for definition in report.definitions:
        # The catalog's hash (content without the version), so `publish` and `list` print the same one.
        print(f"ok {definition.id} v{definition.version} ({definition.source_file}) "
              f"hash {content_hash(definition.snapshot())}")
    for segment in segments:
        print(f"ok segment {segment.id} v{segment.version} ({segment.file})")
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from eventflow.commands.simulate import SimulationError, format_offset, read_events, simulate_run
    from journeys.loader import validate_folder

    report = validate_folder(_folder(args))
    chosen = [d for d in report.definitions if d.id == args.journey]
    if not chosen:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        known = ", ".join(sorted(d.id for d in report.definitions))
        raise SimulationError(f"no valid journey {args.journey!r} (valid journeys: {known or 'none'})")
    events = read_events(Path(args.events))
    run = asyncio.run(simulate_run(chosen[0], events))
    print(f"{'offset':<14} {'local time':<10} {'step':<24} what")
    for entry in run.timeline:
        print(f"{format_offset(entry.offset):<14} {entry.local:<10} {entry.step:<24} {entry.what}")
    if args.diagram:
        from journeys.diagram import build
        from journeys.show import DiagramFormat, draw

        print()
        print(draw(build(chosen[0]).with_path(run.path, finished=run.finished), DiagramFormat(args.diagram)), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from journeys.diagram import build
    from journeys.show import FRONT_README_JOURNEY, DiagramFormat, draw, find_definition, readme_with_diagrams

    if args.update_readme:
        from journeys.loader import default_journeys_dir, load_all

        folder = _folder(args) or default_journeys_dir()
        definitions = load_all(folder)
        readme = folder / "README.md"
        readme.write_text(readme_with_diagrams(readme.read_text(), definitions))
        print(f"updated the diagrams in {readme}")
        if folder == default_journeys_dir():
            front = folder.parent / "README.md"
            front.write_text(readme_with_diagrams(front.read_text(), definitions, only=FRONT_README_JOURNEY))
            print(f"updated the diagram in {front}")
        return 0
    if not args.journey:
        print("eventflow: journeys show needs a journey id (or --update-readme)", file=sys.stderr)
        return 2
    if args.catalog:
        definition = _catalog_definition(args.journey, args.version)
    else:
        definition = find_definition(args.journey, args.version, _folder(args))
    print(draw(build(definition), DiagramFormat(args.format)), end="")
    return 0


def _catalog_definition(journey_id: str, version: int | None) -> JourneyDefinition:
    """A published version (the latest when None) from the catalog topic, as `find_definition` returns one."""
    from consumer.catalog_topic import CatalogWriter
    from eventflow.settings import load_tools
    from journeys.catalog import definition_from_snapshot
    from journeys.show import DefinitionNotFoundError

    tools = load_tools()
    catalog = CatalogWriter(tools.core.kafka.client_config(), tools.catalog.topic, keys=tools.catalog.trust()).read()
    entry = catalog.latest(journey_id) if version is None else catalog.version(journey_id, version)
    if entry is None:
        published = sorted({e.version for e in catalog.history(journey_id)})
        raise DefinitionNotFoundError(f"journey {journey_id!r} has no {'' if version is None else f'version {version} '}"
                                      f"in the catalog {tools.catalog.topic!r} (published versions: "
                                      f"{', '.join(map(str, published)) or 'none'})")
    return definition_from_snapshot(entry.snapshot)


#: How long a status query waits for an answer. Queries are answered by a running `eventflow worker`;
#: without one the server holds the call open, so the commands would hang.
QUERY_TIMEOUT_SECONDS = 5.0


def _no_worker() -> str:
    return f"no worker answered within {QUERY_TIMEOUT_SECONDS:g}s: is `eventflow worker` running?"


def _unanswered(exc: BaseException) -> bool:
    """The query's deadline passed (no worker took it), as opposed to the query failing."""
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(exc, RPCError) and exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class StatusReport:
    """``journeys status``: the lines, and how many journeys went without status because no worker answered."""

    lines: list[str]
    unanswered: int = 0


async def _status_lines(customer_id: str) -> list[str]:
    return (await _status_report(customer_id)).lines


async def _status_report(customer_id: str) -> StatusReport:
    from temporalio.client import WorkflowExecutionStatus

    from core.temporal_client import connect
    from eventflow.settings import load_settings, load_tools
    from workflows.journey import STATUS_QUERY, JourneyStatus

    settings = load_settings(dev_defaults=True)
    client = await connect(settings.temporal)
    database = load_tools().database
    journeys: list[str] = []
    if database.dsn() is not None:
        (outcomes, journeys), no_worker = await _store_outcomes(database, customer_id), False
    else:
        outcomes, no_worker = await _delivery_outcomes(client, customer_id)
    lines: list[str] = []
    unanswered = 0
    for execution in await _customer_executions(client, customer_id, journeys):
        if execution.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            continue
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=JourneyStatus)
        state = execution.status.name.lower() if execution.status else "unknown"
        status: JourneyStatus | None = None
        completed = execution.status == WorkflowExecutionStatus.COMPLETED
        if no_worker and not completed:
            # One unanswered query is enough to know: the others would wait just as long.
            lines.append(f"{execution.id}  {state}  (status unavailable: {_no_worker()})")
            unanswered += 1
            continue
        try:
            if completed:
                status = await handle.result()
            else:
                status = await handle.query(STATUS_QUERY, result_type=JourneyStatus,
                                            rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS))
        except Exception as exc:  # noqa: BLE001 - one unreadable instance must not hide the others
            if _unanswered(exc):
                no_worker = True
                unanswered += 1
                lines.append(f"{execution.id}  {state}  (status unavailable: {_no_worker()})")
                continue
            hint = " — is an `eventflow worker` running? queries need one" if state == "running" else ""
            lines.append(f"{execution.id}  {state}  (status unavailable: {type(exc).__name__}: {exc}{hint})")
            continue
        where = (f"at {status.current_step} ({status.current_step_kind}"
                 + (f" until {status.waiting_until}" if status.waiting_until else "") + ")"
                 if status.current_step else (f"exited: {status.exit_reason}" if status.exit_reason else "done"))
        lines.append(f"{execution.id}  {status.journey_id} v{status.journey_version}  {state}  {where}")
        for send in status.sends:
            key = f"{execution.id}/{send.step_id}" + (f"#{send.channel}" if send.fallback_from else "")
            reported = f", {outcomes[key]}" if key in outcomes else ""
            lines.append(f"    sent {send.step_id}: {send.channel} {send.template_id} -> {send.outcome}{reported}")
        for call in status.webhooks:
            lines.append(f"    webhook {call.step_id}: {call.outcome}")
        lines += _measurement_lines(status)
    return StatusReport(lines, unanswered)


def _measurement_lines(status: JourneyStatus) -> list[str]:
    """The instance's arm and conversion, when it is measured (nothing for journeys without a goal)."""
    from journeys.goals import arm_label

    progress = status.progress
    lines: list[str] = []
    if progress.holdout or progress.converted_at or progress.goal_until:
        arm = arm_label(progress.holdout, status.variants)
        lines.append(f"    arm {arm}: " + (f"converted at {progress.converted_at}" if progress.converted_at
                                          else f"not converted (goal window until {progress.goal_until or '-'})"))
    return lines


async def _store_outcomes(database: DatabaseSettings, customer_id: str) -> tuple[dict[str, str], list[str]]:
    """Each send's latest provider report, from the customer store's ledger, by idempotency key; and the
    workflow ids of the customer's journeys the store recorded (`store.journey_instances`)."""
    from store import open_store
    from store.journey_instances import JourneyInstances

    pool = await open_store(database)
    assert pool is not None
    try:
        rows = await pool.fetch(
            "SELECT idempotency_key, outcome, outcome_at FROM eventflow.sends WHERE customer_id = $1 AND outcome <> ''",
            customer_id)
        journeys = await JourneyInstances(pool).of_customer(customer_id)
    finally:
        await pool.close()
    return ({row["idempotency_key"]: f"{row['outcome']} {row['outcome_at'].isoformat() if row['outcome_at'] else ''}"
             .strip() for row in rows}, journeys)


async def _customer_executions(client: Any, customer_id: str, journeys: Sequence[str]) -> list[Any]:
    """The runs of the customer's journeys: those the store recorded (by workflow id) and those that
    carry the ``CustomerId`` search attribute (started without a store, or before it), each run once."""
    from eventflow.commands._visibility import customer_runs, workflow_runs

    found: dict[str, Any] = {}
    async for execution in customer_runs(client, customer_id):
        found.setdefault(execution.run_id, execution)
    for workflow_id in journeys:
        async for execution in workflow_runs(client, workflow_id):
            found.setdefault(execution.run_id, execution)
    return sorted(found.values(), key=lambda execution: (execution.start_time, execution.id), reverse=True)


async def _delivery_outcomes(client: Any, customer_id: str) -> tuple[dict[str, str], bool]:
    """Each send's latest provider report from the customer's ledger (``opened 2026-...``), by idempotency
    key; and whether the query went unanswered (no worker)."""
    from workflows.preferences_client import preferences_state

    try:
        state = await preferences_state(client, customer_id, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS))
    except Exception as exc:  # noqa: BLE001 - no preferences yet, or no worker to answer: the sends still list
        return {}, _unanswered(exc)
    return {key: f"{entry.outcome} {entry.outcome_at}".strip() + (f" ({entry.error_code})" if entry.error_code else "")
            for key, entry in state.ledger.items() if entry.outcome}, False


def _status(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_status_report(args.customer))
    except RuntimeError as exc:  # the SDK's "Failed client connect": say so without a traceback
        print(f"eventflow: cannot reach Temporal: {exc}", file=sys.stderr)
        return 2
    if not report.lines:
        print(f"no journeys for customer {args.customer}")
        return 0
    print("\n".join(report.lines))
    if report.unanswered:
        print(f"eventflow: {report.unanswered} journey(s) shown without status: {_no_worker()}", file=sys.stderr)
        return 1
    return 0


#: Instances the report reads at once (results and queries).
READ_CONCURRENCY = 32


@dataclass(frozen=True)
class InstanceReads:
    """What `report_instances` read.

    Attributes:
        views: the instances that could be read.
        unreadable: instances whose state could not be read.
        unanswered: of those, the ones whose status query no worker answered in time.
    """

    views: list[InstanceView]
    unreadable: int = 0
    unanswered: int = 0


def _legacy_query(journey_id: str, version: int) -> str:
    """The visibility query of one version's instances started with search attributes (without a store, or
    before it recorded journey instances)."""
    escaped = journey_id.replace("\\", "\\\\").replace("'", "\\'")
    return f"JourneyId = '{escaped}' AND JourneyVersion = {int(version)}"


async def report_instances(journey_id: str, version: int | None = None) -> InstanceReads:
    """Every instance of the journey as a `journeys.report.InstanceView`, and how many could not be read.

    Instances come from Temporal visibility by workflow id (`consumer.catalog_admin.instances_filter`);
    with ``version``, those whose state names another version are left out. A finished one's state is
    its result, a running one's the status query (a worker must run: each query waits
    `QUERY_TIMEOUT_SECONDS`, and after the first unanswered one no other is sent).
    """
    from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

    from consumer.catalog_admin import instances_filter
    from core.temporal_client import connect
    from eventflow.settings import load_settings
    from journeys.report import InstanceView
    from workflows.journey import STATUS_QUERY, JourneyStatus

    query = instances_filter(journey_id)
    if query is None:
        return InstanceReads([])
    client = await connect(load_settings(dev_defaults=True).temporal)
    executions = [e async for e in client.list_workflows(query)
                  if e.status != WorkflowExecutionStatus.CONTINUED_AS_NEW]
    reads = asyncio.Semaphore(READ_CONCURRENCY)
    no_worker = asyncio.Event()

    async def read(execution: WorkflowExecution) -> InstanceView | bool | None:
        """The view; else True when no worker answered, False when the read failed otherwise; None for an
        instance of another version than ``version``."""
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=JourneyStatus)
        state = execution.status
        async with reads:
            try:
                if state != WorkflowExecutionStatus.COMPLETED:
                    # Visibility lags: an instance listed as running may have completed since.
                    state = (await handle.describe()).status
                if state == WorkflowExecutionStatus.COMPLETED:
                    status: JourneyStatus = await handle.result()
                elif no_worker.is_set():
                    return True
                else:
                    status = await handle.query(STATUS_QUERY, result_type=JourneyStatus,
                                                rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS))
            except Exception as exc:  # noqa: BLE001 - one unreadable instance is counted, not fatal to the report
                if _unanswered(exc):
                    no_worker.set()
                    return True
                return False
        if version is not None and status.journey_version != version:
            return None
        return InstanceView(version=status.journey_version, progress=status.progress, variants=dict(status.variants),
                            exit_reason=status.exit_reason, running=state == WorkflowExecutionStatus.RUNNING)

    read_all = [view for view in await asyncio.gather(*(read(execution) for execution in executions))
                if view is not None]
    views = [view for view in read_all if isinstance(view, InstanceView)]
    return InstanceReads(views, unreadable=len(read_all) - len(views),
                         unanswered=sum(1 for view in read_all if view is True))


def _known_definition(journey_id: str) -> tuple[JourneyDefinition | None, str]:
    """The journey's current definition, from the catalog when consumers read it (EVENTFLOW_CATALOG_SOURCE=kafka),
    else from the journeys folder; and where it was looked for."""
    from core.settings import CatalogSettings
    from journeys.loader import default_journeys_dir, validate_folder

    catalog = CatalogSettings.load()
    if catalog.source == "kafka":
        from journeys.show import DefinitionNotFoundError

        try:
            return _catalog_definition(journey_id, None), f"the catalog {catalog.topic!r}"
        except DefinitionNotFoundError:
            return None, f"the catalog {catalog.topic!r}"
    report = validate_folder(None, render_templates=False)
    found = [d for d in report.definitions if d.id == journey_id]
    known = ", ".join(sorted(d.id for d in report.definitions)) or "none"
    return (found[0] if found else None), f"{default_journeys_dir()} (journeys: {known})"


@dataclass(frozen=True)
class ReportOutput:
    """``journeys report``: what goes to stdout, and the problems (stderr, one line each; exit 1)."""

    lines: list[str]
    problems: list[str] = field(default_factory=list)


async def _report_lines(journey_id: str, version: int | None = None) -> list[str]:
    output = await _report_output(journey_id, version)
    return output.lines + output.problems


async def _report_output(journey_id: str, version: int | None = None, *,
                         from_instances: bool = False) -> ReportOutput:
    from eventflow.settings import load_tools
    from journeys.report import build, format_report

    database = load_tools().database
    if database.dsn() is not None and not from_instances:
        return await _store_report(database, journey_id, version)
    reads = await report_instances(journey_id, version)
    definition, looked_in = await asyncio.to_thread(_known_definition, journey_id)
    at = f" at version {version}" if version is not None else ""
    if not reads.views and not reads.unreadable:
        if definition is None:
            return ReportOutput([], [f"eventflow: journey {journey_id!r} has no instances and is not defined in "
                                     f"{looked_in}"])
        return ReportOutput([f"journey {journey_id} has no instances{at} yet: one starts when its trigger event "
                             f"({definition.trigger_event}) reaches the consumer"])
    why = _no_worker() if reads.unanswered == reads.unreadable else (
        f"{reads.unanswered} unanswered ({_no_worker()}), the others failed" if reads.unanswered
        else "their state could not be read")
    if not reads.views:
        # A funnel of zeros would read as "nobody entered": say what happened instead.
        return ReportOutput([], [f"eventflow: none of the {reads.unreadable} instance(s) of {journey_id}{at} could be "
                                 f"read: {why}"])
    lines = format_report(build(journey_id, reads.views,
                                goal_defined=None if definition is None else definition.goal is not None))
    problems = [f"eventflow: {reads.unreadable} of {reads.unreadable + len(reads.views)} instance(s) could not be "
                f"read and are not counted above: {why}"] if reads.unreadable else []
    return ReportOutput(lines, problems)


async def _instance_counts(client: Any, pool: Any, journey_id: str, version: int | None) -> tuple[int, int]:
    """How many instances entered the journey (continued-as-new runs count with their successor) and how
    many run now: visibility counts by workflow id for every version; for one version, the store's
    journey instances plus the visibility counts of those started with search attributes (the running
    ones of the store's are listed, so that part costs a read per running instance, not per instance)."""
    from consumer.catalog_admin import instances_filter
    from store.journey_instances import JourneyInstances

    every = instances_filter(journey_id)
    if every is None:
        return 0, 0
    if version is None:
        query = f"{every} AND ExecutionStatus != 'ContinuedAsNew'"
        entered = (await client.count_workflows(query)).count
        return entered, (await client.count_workflows(f"{every} AND ExecutionStatus = 'Running'")).count
    legacy = f"{_legacy_query(journey_id, version)} AND ExecutionStatus != 'ContinuedAsNew'"
    entered = (await client.count_workflows(legacy)).count
    running = (await client.count_workflows(f"{legacy} AND ExecutionStatus = 'Running'")).count
    running_ids = {e.id async for e in client.list_workflows(f"{every} AND ExecutionStatus = 'Running'")}
    instances = JourneyInstances(pool)
    entered += await instances.count(journey_id, version)
    running += len(await instances.of_version(journey_id, version, running_ids))
    return entered, running


async def _store_report(database: DatabaseSettings, journey_id: str, version: int | None) -> ReportOutput:
    """The funnel aggregated in SQL from the store's funnel events, with the instances counted
    (`_instance_counts`): a few statements and count calls, however many instances there are."""
    from dataclasses import replace

    from temporalio.client import Client

    from core.temporal_client import connect
    from eventflow.settings import load_settings
    from journeys.report import format_funnel
    from store import open_store
    from store.funnel import funnel

    client: Client = await connect(load_settings(dev_defaults=True).temporal)
    pool = await open_store(database)
    assert pool is not None
    try:
        found = await funnel(pool, journey_id, version)
        entered, running = await _instance_counts(client, pool, journey_id, version)
    finally:
        await pool.close()
    if not entered and not found.totals.sent:
        definition, looked_in = await asyncio.to_thread(_known_definition, journey_id)
        at = f" at version {version}" if version is not None else ""
        if definition is None:
            return ReportOutput([], [f"eventflow: journey {journey_id!r} has no instances and is not defined in "
                                     f"{looked_in}"])
        return ReportOutput([f"journey {journey_id} has no instances{at} yet: one starts when its trigger event "
                             f"({definition.trigger_event}) reaches the consumer"])
    return ReportOutput(format_funnel(replace(found, entered=entered, running=running)))


def _report(args: argparse.Namespace) -> int:
    try:
        output = asyncio.run(_report_output(args.journey, args.version, from_instances=args.from_instances))
    except RuntimeError as exc:  # the SDK's "Failed client connect": say so without a traceback
        print(f"eventflow: cannot reach Temporal: {exc}", file=sys.stderr)
        return 2
    if output.lines:
        print("\n".join(output.lines))
    for problem in output.problems:
        print(problem, file=sys.stderr)
    return 1 if output.problems else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds this package's subcommands to the ``eventflow`` parser."""
    journeys = commands.add_parser("journeys", help="journey definitions and the catalog")
    actions = journeys.add_subparsers(dest="journeys_command", title="commands", metavar="COMMAND")

    validate = actions.add_parser("validate", help="check every definition and template (file:line errors)")
    validate.add_argument("--dir", help="folder with definitions/ and templates/ (default: $EVENTFLOW_JOURNEYS_DIR)")
    validate.set_defaults(handler=_validate)

    simulate = actions.add_parser("simulate", help="run a journey on the time-skipping test server")
    simulate.add_argument("journey", help="journey id")
    simulate.add_argument("--events", required=True, help="JSON Lines file of events, delivered at their "
                                                          "occurred_at offsets from the first starting event")
    simulate.add_argument("--dir", help="folder with definitions/ and templates/")
    simulate.add_argument("--diagram", choices=["text", "mermaid", "svg"],
                          help="also print the journey's diagram with the path taken highlighted")
    simulate.set_defaults(handler=_simulate)

    show = actions.add_parser("show", help="draw a journey's step graph (text, Mermaid or SVG)")
    show.add_argument("journey", nargs="?", help="journey id")
    show.add_argument("--version", type=int, help="the definition's version (default: the current one)")
    show.add_argument("--catalog", action="store_true",
                      help="read the journey from the catalog topic (any published version) instead of the folder")
    show.add_argument("--format", choices=["text", "mermaid", "svg"], default="text")
    show.add_argument("--dir", help="folder with definitions/ and templates/")
    show.add_argument("--update-readme", action="store_true",
                      help="regenerate the Mermaid diagrams in the journeys folder's README.md")
    show.set_defaults(handler=_show)

    status = actions.add_parser("status", help="a customer's journeys, current steps and sends")
    status.add_argument("--customer", required=True, help="customer id")
    status.set_defaults(handler=_status)

    report = actions.add_parser("report", help="a journey's funnel and conversion per arm (95 %% intervals, lift)")
    report.add_argument("journey", help="journey id")
    report.add_argument("--version", type=int, help="only this version (default: every version)")
    report.add_argument("--from-instances", action="store_true",
                        help="read every instance (conversion by arm) instead of the customer store's funnel")
    report.set_defaults(handler=_report)

    from eventflow.commands.catalog import register as register_catalog
    from eventflow.commands.render import register_render

    register_catalog(actions)
    register_render(actions)
    # The summary in `eventflow --help` names every subcommand, from the registered list so it cannot drift.
    summary = f"journey definitions and the catalog: {', '.join(actions.choices)}"
    for choice in commands._choices_actions:
        if choice.dest == "journeys":
            choice.help = summary

