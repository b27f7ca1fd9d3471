"""Loads and checks journey definitions and their templates from a folder of YAML files.

Each file is read into types first (`journeys.model.parse_document`, after the published JSON
Schema), and every further check runs over the typed document (`journeys._definition_checks`).
Every problem is reported as a `Problem` naming the file and the line (YAML is parsed with a
loader that keeps line numbers, and a typed node's document path finds its line). `load_all`
raises on the first problem; ``eventflow journeys validate`` uses `validate_folder`, which
collects all of them and also test-renders every template with sample data built from the Avro
schemas.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from activities.caps import ALL_CHANNELS
from activities.topics import TopicCatalog
from core.settings import JourneySettings
from core.vocabulary import CHANNELS
from events.schemas import load as load_schemas
from journeys import expressions
from journeys._caps import with_journey_defaults
from journeys._definition_checks import Checked, check_content
from journeys._templates import TemplateSource, check_template
from journeys._templates import load_templates as load_templates
from journeys._whatsapp_checks import whatsapp_window_problems
from journeys._yaml import DocPath, LocatedDocument, YamlSyntaxError, read_document
from journeys.event_schemas import EventCatalogue, catalogue
from journeys.model import DocumentShapeError, JourneyDefinition, JourneyDocument, Listener, Template, parse_document
from journeys.problems import JourneyDefinitionError as JourneyDefinitionError
from journeys.problems import Problem, Report
from journeys.steps import BranchStep, DigestStep, SendOptions, Step, WaitForStep, map_steps, sending, walk
from journeys.topics import load_topics

JOURNEYS_DIR_ENV = JourneySettings.variable("journeys_dir")
SCHEMA_PATH = Path(__file__).resolve().parent / "journey.schema.json"


def default_journeys_dir() -> Path:
    """``$EVENTFLOW_JOURNEYS_DIR`` or the ``journeys/`` folder beside the packages."""
    explicit = JourneySettings.load().journeys_dir
    return explicit if explicit is not None else Path(__file__).resolve().parent


def _line_of_id(path: Path) -> int:
    try:
        return read_document(path).line_of(("id",)) or 1
    except YamlSyntaxError:
        return 1


@cache
def journey_schema() -> dict[str, Any]:
    """The published JSON Schema of a definition file (``journeys/journey.schema.json``)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def _event_types() -> frozenset[str]:
    return load_schemas().event_types


# --- definitions -----------------------------------------------------------------------------


def _schema_problems(report: Report) -> None:
    validator = jsonschema.Draft202012Validator(journey_schema())
    for error in sorted(validator.iter_errors(report.document.data), key=lambda e: list(map(str, e.absolute_path))):
        path: DocPath = tuple(error.absolute_path)
        where = ".".join(str(p) for p in path) or "top level"
        message = error.message
        if error.validator == "oneOf" and isinstance(error.instance, Mapping):
            options = [next(iter(s.get("required", ["?"]))) for s in error.validator_value]
            present = [o for o in options if o in error.instance]
            message = (f"needs exactly one of {', '.join(options)}" if not present
                       else f"has more than one of {', '.join(present)}")
        elif error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            allowed = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
            extras = [str(key) for key in error.instance if key not in allowed]
            if extras:
                # Point at the unexpected key itself, the likeliest typo.
                message = f"unknown key {extras[0]!r}; allowed: {', '.join(allowed)}"
                path = (*path, extras[0])
        duration_pattern = str(error.schema.get("pattern", "")) if isinstance(error.schema, Mapping) else ""
        if error.validator in ("pattern", "type") and "[smhdw]" in duration_pattern:
            signed = "[+-]" in duration_pattern
            message = (f"{where}: {error.instance!r} is not a duration: use a number and a unit, e.g. 10m "
                       f"(s, m, h, d, w; combined as 1h30m{'; signed as -1d' if signed else ''})")
            report.add(path, message)
            continue
        if error.validator == "pattern" and path and path[-1] == "caps":
            message = (f"{error.instance!r} is not caps like email:day=2,week=5;all:month=20 "
                       f"(scopes {', '.join((*CHANNELS, ALL_CHANNELS))}; windows day, week, month)")
        if error.validator == "type" and path and path[-1] == "until_local_time":
            message += ' (quote the time: until_local_time: "10:00"; YAML reads 10:00 as a number)'
        report.add(path, f"{where}: {message}")


def check_definition(path: Path, templates: Mapping[str, TemplateSource], *,
                     event_types: Collection[str] | None = None,
                     render_templates: bool = False, allowed_hosts: Collection[str] | None = None,
                     topics: TopicCatalog | None = None) -> tuple[JourneyDefinition | None, list[Problem]]:
    """Checks one definition file; returns the definition (None if it has problems) and the problems.

    ``allowed_hosts`` judges webhook steps' literal hosts (None: not judged, as when a process loads);
    ``topics`` judges send steps' topics the same way.
    """
    try:
        document = read_document(path)
    except YamlSyntaxError as exc:
        return None, [Problem(str(path), exc.line or 1, exc.problem)]
    report = Report(str(path), document)
    definition = _check_document(report, templates, _event_types() if event_types is None else event_types,
                                 render_templates=render_templates, allowed_hosts=allowed_hosts, topics=topics)
    # Files only: a snapshot published before this rule still runs (its sends fail or fall back, never
    # reach WhatsApp outside the window), so the catalog's check_snapshot does not refuse it.
    for where, problem in whatsapp_window_problems(definition) if definition is not None else ():
        report.add(where, problem)
    return (definition if not report.problems else None), report.problems


def _check_document(report: Report, templates: Mapping[str, TemplateSource], known: Collection[str], *,
                    render_templates: bool, allowed_hosts: Collection[str] | None,
                    topics: TopicCatalog | None = None) -> JourneyDefinition | None:
    """Every check of one definition document (``report.document``); the definition, or None on a problem.

    The document is checked against the schema, read into a `JourneyDocument`, and the typed
    document checked (`check_content`). A document the schema refuses is still read and checked as
    far as its types allow, so one run names every mistake (`_problems_beyond_the_schema`).
    """
    _schema_problems(report)
    if report.problems:
        report.problems.extend(_problems_beyond_the_schema(report, templates, known, render_templates, allowed_hosts,
                                                           topics))
        return None
    document = parse_document(report.document.data)  # the schema's shape always reads
    checked = check_content(report, document, templates, known, render_templates, allowed_hosts, topics)
    if report.problems:
        return None
    return _definition(document, checked, templates, report.file)


def _definition(document: JourneyDocument, checked: Checked, templates: Mapping[str, TemplateSource],
                file: str) -> JourneyDefinition:
    """The checked document compiled: listener keys resolved, the journey's defaults folded into its sends."""
    def resolve(step: Step) -> Step:
        if isinstance(step, (WaitForStep, DigestStep)) and step.id in checked.resolved_keys:
            return replace(step, key=checked.resolved_keys[step.id])
        return step

    used = {options.template for options in _sends(document.steps)}
    return JourneyDefinition(
        id=document.id,
        version=document.version,
        trigger_event=document.trigger_event,
        trigger_filter=document.trigger_filter,
        entry_rule=document.entry_rule,
        key_path=document.entry_key,
        listeners=checked.listeners,
        exit_events=checked.exits,
        steps=with_journey_defaults(map_steps(document.steps, resolve), document.priority, document.caps),
        templates={t: templates[t].template for t in sorted(used)},
        source_file=file,
        goal=checked.goal,
        holdout_percent=document.holdout_percent,
    )


def _sends(steps: tuple[Step, ...]) -> Iterator[SendOptions]:
    return (step.send for step, _ in sending(steps))


def _problems_beyond_the_schema(schema_report: Report, templates: Mapping[str, TemplateSource],
                                known: Collection[str], render_templates: bool,
                                allowed_hosts: Collection[str] | None,
                                topics: TopicCatalog | None = None) -> list[Problem]:
    """The content checks' problems on a document the schema refused, so one run names every mistake.

    The document is read into types where it can be: one whose shape has no typed reading (a
    missing key, a mapping where a list belongs) gets the schema's problems only, and the rest wait
    for the next run. A line the schema already flagged gets no second problem.
    """
    try:
        document = parse_document(schema_report.document.data)
    except DocumentShapeError:
        return []  # the schema's problems say why; see the docstring
    flagged = {problem.line for problem in schema_report.problems}
    report = Report(schema_report.file, schema_report.document)
    check_content(report, document, templates, known, render_templates, allowed_hosts, topics)
    return [problem for problem in report.problems if problem.line not in flagged]


class _PublishedEvents(EventCatalogue):
    """The event types a catalog snapshot may name: built-in ones with samples, any other without.

    A publisher validated the snapshot's custom event types against its own ``sources.yaml``,
    which a consumer or worker following the catalog does not have; so here an unknown type is
    taken as known with an empty sample (its expressions still parse, nothing further is checked,
    and templates rendered with such an event are compiled but not test-rendered).
    """

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str)


def _listener_document(listener: Listener) -> dict[str, Any]:
    body: dict[str, Any] = {"event": listener.event_type}
    if listener.key_path is not None:
        body["key"] = listener.key_path
    if listener.when is not None:
        body["when"] = listener.when
    return body


def _with_empty_arms(steps: Any) -> Any:
    """A snapshot's step documents with the ``steps: []`` of empty branch cases and split variants put back.

    `encode_step` leaves out options at their defaults, an empty arm's steps among them, which the
    definition schema requires. Recursion is bounded: the catalog codec bounds a record's nesting.
    """
    if isinstance(steps, list):
        return [_with_empty_arms(step) for step in steps]
    if not isinstance(steps, Mapping):
        return steps
    restored = {key: _with_empty_arms(value) for key, value in steps.items()}
    for kind, arms_key in (("branch", "cases"), ("split", "variants")):
        body = restored.get(kind)
        if isinstance(body, dict) and isinstance(body.get(arms_key), list):
            body[arms_key] = [{"steps": [], **arm} if isinstance(arm, Mapping) else arm for arm in body[arms_key]]
    return restored


def _expressions(document: JourneyDocument) -> Iterator[tuple[str, str]]:
    """Every expression of a definition: where it is in the document, and its source."""
    if document.trigger_filter:
        yield "trigger.filter", document.trigger_filter
    for index, item in enumerate(document.exits):
        if item.when:
            yield f"exit.{index}.when", item.when
    if document.goal is not None and document.goal.when:
        yield "goal.filter", document.goal.when
    for step, path in walk(document.steps):
        where = ".".join(map(str, path))
        match step:
            case WaitForStep(when=str() as when) | DigestStep(when=str() as when) if when:
                yield f"{where}.{step.KIND.value}.when", when
            case BranchStep(cases=cases):
                for number, case in enumerate(cases):
                    yield f"{where}.branch.cases.{number}.when", case.when


def check_snapshot(snapshot: Mapping[str, Any], decoded: JourneyDefinition) -> list[Problem]:
    """The checks of ``journeys validate`` on a published snapshot (a catalog entry's), templates test-rendered.

    The snapshot is turned back into the definition document it was compiled from (its steps are
    already documents) and checked as a file would be; the definition that compiles from it must
    route as the snapshot says (same listeners, exits and templates), so a snapshot cannot name
    listeners or templates its steps do not have. ``decoded`` is the snapshot read into the typed
    model (`journeys.catalog.definition_from_snapshot`). Problems name ``catalog:<id>@v<version>``.
    """
    file = f"catalog:{decoded.id}@v{decoded.version}"
    problems: list[Problem] = []
    templates: dict[str, TemplateSource] = {}
    for name, template in decoded.templates.items():
        document = LocatedDocument({"id": template.id, "default_locale": template.default_locale,
                                    "channels": template.variants})
        checked = check_template(Path(f"{file}/templates/{name}"), document, problems)
        if checked is not None and checked.template.id != name:
            problems.append(Problem(file, 1, f"template {name!r} carries the id {checked.template.id!r}"))
        elif checked is not None:
            templates[name] = checked
    trigger: dict[str, Any] = {"event": snapshot.get("trigger_event")}
    if snapshot.get("trigger_filter") is not None:
        trigger["filter"] = snapshot["trigger_filter"]
    entry: dict[str, Any] = {"rule": snapshot.get("entry_rule")}
    if snapshot.get("key_path") is not None:
        entry["key"] = snapshot["key_path"]
    raw: dict[str, Any] = {"id": snapshot.get("id"), "version": snapshot.get("version"), "trigger": trigger,
                           "entry": entry, "exit": [_listener_document(e) for e in decoded.exit_events],
                           "steps": _with_empty_arms(snapshot.get("steps"))}
    if decoded.goal is not None:
        goal = decoded.goal
        raw["goal"] = {k: v for k, v in {"event": goal.event_type, "within": goal.within, "key": goal.key_path,
                                         "filter": goal.when, "after": goal.after}.items() if v is not None}
    if "holdout_percent" in snapshot:
        raw["holdout_percent"] = snapshot["holdout_percent"]
    builtin = _event_types()
    rendered_with = {decoded.trigger_event, *(step.event for step, _ in walk(decoded.steps)
                                              if isinstance(step, DigestStep))}
    report = Report(file, LocatedDocument(raw))
    compiled = _check_document(report, templates, _PublishedEvents(builtin), allowed_hosts=None,
                               render_templates=bool(rendered_with) and rendered_with <= builtin)
    problems += report.problems
    if compiled is None or problems:
        return problems
    # Expressions over events this process has no sample of were not checked above; each must parse at least.
    for where, source in _expressions(parse_document(raw)):  # the schema accepted it, so it reads
        try:
            expressions.parse(source)
        except expressions.ExpressionError as exc:
            problems.append(Problem(file, 1, f"{where}: {exc}"))
    if problems:
        return problems
    if set(compiled.listeners) != set(decoded.listeners):
        problems.append(Problem(file, 1, "the snapshot's listeners are not the ones its steps and goal listen with"))
    if set(compiled.templates) != set(decoded.templates):
        problems.append(Problem(file, 1, "the snapshot's templates are not the ones its steps use"))
    if compiled.steps != decoded.steps:
        problems.append(Problem(file, 1, "the snapshot's steps do not compile to themselves"))
    return problems


def load_definition(path: Path, templates: Mapping[str, TemplateSource | Template]) -> JourneyDefinition:
    """Parses and checks one journey file; raises `JourneyDefinitionError` naming the first problem's line."""
    sources = {k: v if isinstance(v, TemplateSource) else TemplateSource(v, "", LocatedDocument(None))
               for k, v in templates.items()}
    definition, problems = check_definition(path, sources)
    if definition is None:
        raise problems[0].error()
    return definition


@dataclass(frozen=True)
class ValidationReport:
    """What ``eventflow journeys validate`` found: the good definitions and every problem."""

    definitions: tuple[JourneyDefinition, ...]
    problems: tuple[Problem, ...]


def validate_folder(folder: Path | None = None, *, render_templates: bool = True,
                    allowed_hosts: Collection[str] | None = None) -> ValidationReport:
    """Checks every template and definition under ``folder``, collecting all problems.

    ``allowed_hosts`` judges webhook steps' literal hosts (``journeys validate`` passes its setting).
    """
    root = folder or default_journeys_dir()
    templates, problems = load_templates(root / "templates")
    known, source_problems = catalogue(_event_types(), root)
    problems.extend(source_problems)
    topics, topic_problems = load_topics(root)
    problems.extend(topic_problems)
    definitions: list[JourneyDefinition] = []
    seen: dict[str, str] = {}
    for path in sorted((root / "definitions").glob("*.yaml")):
        definition, found = check_definition(path, templates, event_types=known, render_templates=render_templates,
                                             allowed_hosts=allowed_hosts,
                                             # a broken topics file is reported once, not at every send naming a topic
                                             topics=None if topic_problems else topics)
        problems.extend(found)
        if definition is None:
            continue
        if definition.id in seen:
            problems.append(Problem(str(path), _line_of_id(path),
                                    f"journey id {definition.id!r} is also used by {seen[definition.id]}"))
            continue
        seen[definition.id] = str(path)
        definitions.append(definition)
    return ValidationReport(tuple(definitions), tuple(problems))


def load_all(folder: Path | None = None) -> tuple[JourneyDefinition, ...]:
    """Loads every ``definitions/*.yaml`` under ``folder``; raises on the first problem found."""
    report = validate_folder(folder, render_templates=False)
    if report.problems:
        raise report.problems[0].error()
    return report.definitions
