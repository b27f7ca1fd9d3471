"""``eventflow journeys`` subcommands: validate, simulate, show, status, report, and the catalog's (publish, list, ...)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journeys.model import JourneyDefinition
    from journeys.report import InstanceView
    from workflows.journey import JourneyStatus


def _folder(args: argparse.Namespace) -> Path | None:
    return Path(args.dir) if args.dir else None


def _validate(args: argparse.Namespace) -> int:
    from core.settings import WebhookStepSettings
    from journeys.loader import validate_folder

    report = validate_folder(_folder(args), allowed_hosts=WebhookStepSettings.load().allowed_hosts)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    for definition in report.definitions:
        print(f"ok {definition.id} v{definition.version} ({definition.source_file}) "
              f"hash {definition.snapshot()['content_hash']}")
    if report.problems:
        print(f"{len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from journeys.loader import validate_folder
    from eventflow.commands.simulate import SimulationError, format_offset, read_events, simulate_run

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
    from core.settings import load_tools
    from journeys.catalog import definition_from_snapshot
    from journeys.show import DefinitionNotFoundError

    tools = load_tools()
    catalog = CatalogWriter(tools.core.kafka.client_config(), tools.catalog.topic).read()
    entry = catalog.latest(journey_id) if version is None else catalog.version(journey_id, version)
    if entry is None:
        published = sorted({e.version for e in catalog.history(journey_id)})
        raise DefinitionNotFoundError(f"journey {journey_id!r} has no {'' if version is None else f'version {version} '}"
                                      f"in the catalog {tools.catalog.topic!r} (published versions: "
                                      f"{', '.join(map(str, published)) or 'none'})")
    return definition_from_snapshot(entry.snapshot)


async def _status_lines(customer_id: str) -> list[str]:
    from temporalio.client import WorkflowExecutionStatus

    from core.settings import load_settings
    from core.temporal_client import connect
    from workflows.journey import STATUS_QUERY, JourneyStatus

    settings = load_settings(dev_defaults=True)
    client = await connect(settings.temporal)
    outcomes = await _delivery_outcomes(client, customer_id)
    escaped = customer_id.replace("\\", "\\\\").replace("'", "\\'")
    lines: list[str] = []
    async for execution in client.list_workflows(f"CustomerId = '{escaped}'"):
        if execution.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            continue
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=JourneyStatus)
        state = execution.status.name.lower() if execution.status else "unknown"
        status: JourneyStatus | None = None
        try:
            if execution.status == WorkflowExecutionStatus.COMPLETED:
                status = await handle.result()
            else:
                status = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
        except Exception as exc:  # noqa: BLE001 - one unreadable instance must not hide the others
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
    return lines


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


async def _delivery_outcomes(client: Any, customer_id: str) -> dict[str, str]:
    """Each send's latest provider report from the customer's ledger (``opened 2026-...``), by idempotency key."""
    from workflows.preferences_client import preferences_state

    try:
        state = await preferences_state(client, customer_id)
    except Exception:  # noqa: BLE001 - no preferences yet, or no worker to answer: the sends still list
        return {}
    return {key: f"{entry.outcome} {entry.outcome_at}".strip() + (f" ({entry.error_code})" if entry.error_code else "")
            for key, entry in state.ledger.items() if entry.outcome}


def _status(args: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(_status_lines(args.customer))
    except RuntimeError as exc:  # the SDK's "Failed client connect": say so without a traceback
        print(f"eventflow: cannot reach Temporal: {exc}", file=sys.stderr)
        return 2
    if not lines:
        print(f"no journeys for customer {args.customer}")
        return 0
    print("\n".join(lines))
    return 0


#: Instances the report reads at once (results and queries).
READ_CONCURRENCY = 32


async def report_instances(journey_id: str, version: int | None = None) -> tuple[list[InstanceView], int]:
    """Every instance of the journey as a `journeys.report.InstanceView`, and how many could not be read.

    Instances come from Temporal visibility (``JourneyId``, optionally ``JourneyVersion``); a
    finished one's state is its result, a running one's the status query (a worker must run).
    """
    from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

    from core.settings import load_settings
    from core.temporal_client import connect
    from journeys.report import InstanceView
    from workflows.journey import STATUS_QUERY, JourneyStatus

    client = await connect(load_settings(dev_defaults=True).temporal)
    escaped = journey_id.replace("\\", "\\\\").replace("'", "\\'")
    query = f"JourneyId = '{escaped}'" + (f" AND JourneyVersion = {int(version)}" if version is not None else "")
    executions = [e async for e in client.list_workflows(query)
                  if e.status != WorkflowExecutionStatus.CONTINUED_AS_NEW]
    reads = asyncio.Semaphore(READ_CONCURRENCY)

    async def read(execution: WorkflowExecution) -> InstanceView | None:
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=JourneyStatus)
        state = execution.status
        async with reads:
            try:
                if state != WorkflowExecutionStatus.COMPLETED:
                    # Visibility lags: an instance listed as running may have completed since.
                    state = (await handle.describe()).status
                if state == WorkflowExecutionStatus.COMPLETED:
                    status: JourneyStatus = await handle.result()
                else:
                    status = await handle.query(STATUS_QUERY, result_type=JourneyStatus)
            except Exception:  # noqa: BLE001 - one unreadable instance is counted, not fatal to the report
                return None
        return InstanceView(version=status.journey_version, progress=status.progress, variants=dict(status.variants),
                            exit_reason=status.exit_reason, running=state == WorkflowExecutionStatus.RUNNING)

    read_all = await asyncio.gather(*(read(execution) for execution in executions))
    views = [view for view in read_all if view is not None]
    unreadable = len(read_all) - len(views)
    return views, unreadable


async def _report_lines(journey_id: str, version: int | None = None) -> list[str]:
    from journeys.report import build, format_report

    views, unreadable = await report_instances(journey_id, version)
    lines = format_report(build(journey_id, views))
    if unreadable:
        lines.append(f"{unreadable} instance(s) could not be read (is an `eventflow worker` running?)")
    return lines


def _report(args: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(_report_lines(args.journey, args.version))
    except RuntimeError as exc:  # the SDK's "Failed client connect": say so without a traceback
        print(f"eventflow: cannot reach Temporal: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds this package's subcommands to the ``eventflow`` parser."""
    journeys = commands.add_parser("journeys", help="journey definitions: validate, simulate, show, status, report")
    actions = journeys.add_subparsers(dest="journeys_command", required=True)

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

    report = actions.add_parser("report", help="a journey's funnel and conversion per arm (95 % intervals, lift)")
    report.add_argument("journey", help="journey id")
    report.add_argument("--version", type=int, help="only this version (default: every version)")
    report.set_defaults(handler=_report)

    from eventflow.commands.catalog import register as register_catalog
    from eventflow.commands.render import register_render

    register_catalog(actions)
    register_render(actions)

