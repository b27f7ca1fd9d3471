"""Loads and checks journey definitions and their templates from a folder of YAML files.

Every problem is reported as a `Problem` naming the file and the line (YAML is parsed with a
loader that keeps line numbers). `load_all` raises on the first problem; ``eventflow journeys
validate`` uses `validate_folder`, which collects all of them and also test-renders every
template with sample data built from the Avro schemas.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from activities.contact import sample_template_view
from core.settings import JourneySettings
from core.vocabulary import CHANNELS, DEVICE_CHANNELS
from journeys import _goal_checks, expressions
from journeys._caps import caps_problems, with_journey_defaults
from journeys._checks import (  # the error and Problem stay importable from here
    CONTEXT_ROOTS,
    Report,
    check_expression,
    check_key,
    listener_key,
    path_problem,
    sample_for,
)
from journeys._checks import (
    JourneyDefinitionError as JourneyDefinitionError,
)
from journeys._checks import (
    Problem as Problem,
)
from journeys._yaml import DocPath, LocatedDocument, YamlSyntaxError, read_document
from journeys.durations import check_duration
from journeys.event_schemas import EventCatalogue, catalogue
from journeys.goals import Goal
from journeys.model import EntryRule, JourneyDefinition, Listener, Template
from journeys.paths import lookup
from journeys.steps import DigestStep, Step, WaitForStep, decode_steps, kind_of, map_steps
from journeys.steps import walk_document as walk
from journeys.timing import parse_timestamp
from journeys.webhook_check import ResponseSample, webhook_problems

JOURNEYS_DIR_ENV = JourneySettings.variable("journeys_dir")
SCHEMA_PATH = Path(__file__).resolve().parent / "journey.schema.json"
#: Top-level names a template or an expression over the journey's own event can use.
#: Step options that hold a duration (``offset`` a signed one), checked for range beyond the schema's pattern.
_DURATION_OPTIONS = {"delay": ("duration", "after", "offset"), "wait_for": ("timeout",), "digest": ("window",)}
# (webhook durations are checked by journeys.webhook_check, with the rest of the step)


@dataclass(frozen=True)
class TemplateSource:
    """A loaded template and where each of its variants is, for error messages."""

    template: Template
    file: str
    document: LocatedDocument


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


@cache
def _jinja() -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=False)


def _event_types() -> frozenset[str]:
    from events.schemas import load as load_schemas

    return load_schemas().event_types


# --- templates -------------------------------------------------------------------------------


def _parts(variant: Mapping[str, Any]) -> list[str]:
    """The Jinja2 sources of a variant: subject, body, the email's HTML part, each provider template
    variable, and a push variant's title, deep link and each data value."""
    names = [p for p in ("subject", "title", "body", "html", "link") if p in variant]
    for group in ("content_variables", "data"):
        values = variant.get(group)
        if isinstance(values, Mapping):
            names += [f"{group}/{name}" for name in values]
    return names


def _part(variant: Mapping[str, Any], part: str) -> Any:
    group, _, name = part.partition("/")
    if name and group in ("content_variables", "data"):
        return variant[group][name]
    return variant.get(part)


def _check_push_parts(report: Report, where: DocPath, channel: str, locale: str, variant: Mapping[str, Any]) -> None:
    """A push variant has a title and a body, and may have a deep link and string data; no other variant has them."""
    if channel in DEVICE_CHANNELS:
        if not isinstance(variant.get("title"), str) or not variant["title"].strip():
            report.add(where, f"{channel}/{locale} needs a title (the notification's heading)")
        link = variant.get("link")
        if link is not None and (not isinstance(link, str) or ("://" not in link and not link.startswith("/"))):
            report.add((*where, "link"), f"{channel}/{locale} link: a deep link is a URL (https://..., "
                                         f"myapp://...) or a path on the site (/cart)")
        data = variant.get("data")
        if data is not None and (not isinstance(data, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items())):
            report.add((*where, "data"), f"{channel}/{locale} data: a mapping of names to text (FCM and Web Push "
                                         f"carry strings; quote numbers)")
        return
    for part in ("title", "link", "data"):
        if part in variant:
            report.add((*where, part), f"{channel}/{locale} {part}: only a push or webpush variant has a {part}")


def _check_template(path: Path, document: LocatedDocument, problems: list[Problem]) -> Template | None:
    report = Report(str(path), document)
    raw = document.data
    if not isinstance(raw, Mapping):
        report.add((), "a template file must be a mapping with id, default_locale and channels")
        problems.extend(report.problems)
        return None
    template_id = str(raw.get("id", path.stem))
    default_locale = raw.get("default_locale", "en")
    channels = raw.get("channels")
    if not isinstance(channels, Mapping) or not channels:
        report.add(("channels",), "channels must map a channel (email, sms, whatsapp) to its locales")
        problems.extend(report.problems)
        return None
    broken = False
    for channel, locales in channels.items():
        if channel not in CHANNELS:
            report.add(("channels", channel), f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
            continue
        if not isinstance(locales, Mapping) or default_locale not in locales:
            report.add(("channels", channel), f"channel {channel} has no variant for the default locale "
                                              f"{default_locale!r}")
            continue
        for locale, variant in locales.items():
            where = ("channels", channel, locale)
            if not isinstance(variant, Mapping):
                report.add(where, f"{channel}/{locale} must be a mapping with a body")
                continue
            provider_template = variant.get("content_sid") or variant.get("sendgrid_template_id")
            if not provider_template and not isinstance(variant.get("body"), str):
                report.add(where, f"{channel}/{locale} needs a body (or a provider template id)")
                continue
            if channel == "email" and not provider_template and not isinstance(variant.get("subject"), str):
                report.add(where, f"email/{locale} needs a subject")
            if "html" in variant and (channel != "email" or not isinstance(variant["html"], str)):
                report.add((*where, "html"), f"{channel}/{locale} html: only an email variant has an HTML part, "
                                             f"a string sent with the body as its HTML alternative")
            _check_push_parts(report, where, channel, locale, variant)
            for part in _parts(variant):
                source = _part(variant, part)
                if not isinstance(source, str):
                    continue
                try:
                    _jinja().parse(source)
                except TemplateSyntaxError as exc:
                    broken = True
                    line = document.line_of((*where, *part.split("/")))
                    offset = (exc.lineno or 1) if source.count("\n") else 0
                    problems.append(Problem(str(path), max(1, (line or 0) + offset),
                                            f"template {template_id} {channel}/{locale} {part} does not "
                                            f"compile: {exc.message}"))
    problems.extend(report.problems)
    if report.problems or broken:
        return None
    return Template(id=template_id, default_locale=str(default_locale),
                    variants={c: {loc: dict(v) for loc, v in ls.items()} for c, ls in channels.items()})


def load_templates(folder: Path) -> tuple[dict[str, TemplateSource], list[Problem]]:
    """Every ``*.yaml`` template under ``folder`` that is well-formed, and the problems of the others."""
    sources: dict[str, TemplateSource] = {}
    problems: list[Problem] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            document = read_document(path)
        except YamlSyntaxError as exc:
            problems.append(Problem(str(path), exc.line or 1, exc.problem))
            continue
        template = _check_template(path, document, problems)
        if template is None:
            continue
        if template.id in sources:
            problems.append(Problem(str(path), document.line_of(("id",)) or 1,
                                    f"template id {template.id!r} is also used by {sources[template.id].file}"))
            continue
        sources[template.id] = TemplateSource(template, str(path), document)
    return sources, problems


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
                       "(scopes email, sms, whatsapp, all; windows day, week, month)")
        if error.validator == "type" and path and path[-1] == "until_local_time":
            message += ' (quote the time: until_local_time: "10:00"; YAML reads 10:00 as a number)'
        report.add(path, f"{where}: {message}")


#: A step as the document has it, before it is typed.
_RawStep = Mapping[str, Any]


def _referenced_templates(steps: Sequence[_RawStep]) -> list[tuple[_RawStep, DocPath, Mapping[str, Any]]]:
    found = []
    for step, path in walk(steps):
        kind = kind_of(step)
        if kind == "send":
            found.append((step, (*path, "send"), step["send"]))
        elif kind == "digest":
            found.append((step, (*path, "digest", "send"), step["digest"]["send"]))
    return found


def _template_context(definition: Mapping[str, Any], trigger_sample: Mapping[str, Any],
                      digest_event: str | None, known: Collection[str]) -> dict[str, Any]:
    variants = {str(step["id"]): str(step["split"]["variants"][0]["name"])
                for step, _ in walk(definition["steps"]) if kind_of(step) == "split"}
    context: dict[str, Any] = {**trigger_sample, "journey": {
        "id": definition["id"], "version": definition["version"], "content_hash": "0" * 16, "variants": variants}}
    context["webhooks"] = {str(step["webhook"]["save_as"]): ResponseSample() for step, _ in walk(definition["steps"])
                           if kind_of(step) == "webhook" and step["webhook"].get("save_as")}
    context["profile"] = sample_template_view()  # resolved from the customer's profile at send time
    if digest_event is not None:
        event = sample_for(digest_event, known)
        context["digest"] = {"events": [event, event], "count": 2}
    return context


def _test_render(report: Report, where: DocPath, step: _RawStep, source: TemplateSource, channels: Sequence[str],
                 context: Mapping[str, Any]) -> None:
    from activities.rendering import TemplateRenderError, is_html_part, render, render_html

    template = source.template
    for channel in channels:
        for locale, variant in template.variants.get(channel, {}).items():
            for part in _parts(variant):
                text = _part(variant, part)
                if not isinstance(text, str):
                    continue
                line = source.document.line_of(("channels", channel, locale, *part.split("/"))) or 1
                label = f"template {template.id} {channel}/{locale} {part} (step {step['id']})"
                undeclared = meta.find_undeclared_variables(_jinja().parse(text)) - set(context)
                if undeclared:
                    report.problems.append(Problem(source.file, line, f"{label} uses unknown variables "
                                                                       f"{sorted(undeclared)}"))
                    continue
                try:
                    if part == "html":
                        render_html(template.id, text, context)  # as the send activity does: CSS inlined too
                    else:
                        render(template.id, text, context, html=is_html_part(part))
                except TemplateRenderError as exc:
                    hint = (" (a dict key like items/keys/values needs x[\"items\"] syntax)"
                            if isinstance(exc.__cause__, TypeError) else "")
                    report.problems.append(Problem(source.file, line, f"{label} does not render with sample "
                                                                       f"data: {exc.problem}{hint}"))


def _check_steps(report: Report, raw: Mapping[str, Any], templates: Mapping[str, TemplateSource],
                 known_events: Collection[str], trigger_sample: Mapping[str, Any], render_templates: bool,
                 allowed_hosts: Collection[str] | None = None) -> None:
    seen: dict[str, DocPath] = {}
    saved: set[str] = set()
    for step, path in walk(raw["steps"]):
        step_id = str(step["id"])
        if step_id in seen:
            report.add((*path, "id"), f"step id {step_id!r} is used twice (ids name sends and positions)")
        seen[step_id] = path
        kind = kind_of(step)
        body = step[kind] or {}
        for option in _DURATION_OPTIONS.get(kind, ()):
            if isinstance(body.get(option), str):
                try:
                    check_duration(body[option])
                except ValueError as exc:
                    report.add((*path, kind, option), f"{kind}.{option}: {exc}")
        if kind in ("wait_for", "digest") and "event" in body:
            event_type = body["event"]
            if event_type not in known_events:
                report.add((*path, kind, "event"), f"unknown event type {event_type!r}")
            sample = sample_for(event_type, known_events)
            if body.get("when") and sample:
                check_expression(report, (*path, kind, "when"), body["when"], sample, CONTEXT_ROOTS - {"journey"})
            if body.get("key"):
                check_key(report, (*path, kind, "key"), body["key"], sample, event_type)
        if kind == "branch":
            for index, case in enumerate(body["cases"]):
                check_expression(report, (*path, "branch", "cases", index, "when"), case["when"],
                                  trigger_sample, CONTEXT_ROOTS)
        if kind == "split":
            names = [v["name"] for v in body["variants"]]
            if sum(v["percent"] for v in body["variants"]) != 100:
                report.add((*path, "split", "variants"), "split percentages must add up to 100")
            if len(set(names)) != len(names):
                report.add((*path, "split", "variants"), "split variant names must be unique")
        if kind == "webhook":
            for relative, message in webhook_problems(body, allowed_hosts):
                report.add((*path, "webhook", *relative), message)
            if body.get("save_as") in saved:
                report.add((*path, "webhook", "save_as"), f"save_as {body['save_as']!r} is used twice")
            if body.get("save_as"):
                saved.add(str(body["save_as"]))
        if kind == "delay":
            if "after" in body and "until_local_time" not in body:
                report.add((*path, "delay", "after"), "after only goes with until_local_time")
            if "offset" in body and "until" not in body:
                report.add((*path, "delay", "offset"), "offset only goes with until")
            if "until" in body and trigger_sample:
                problem = path_problem(trigger_sample, body["until"].split("."), CONTEXT_ROOTS - {"journey"})
                if problem is None and parse_timestamp(lookup(trigger_sample, body["until"])) is None:
                    problem = "is not a timestamp in the event"
                if problem:
                    report.add((*path, "delay", "until"), f"until {body['until']!r}: {problem}")
    for step, where, send in _referenced_templates(raw["steps"]):
        source = templates.get(send["template"])
        if source is None:
            report.add((*where, "template"), f"unknown template {send['template']!r}")
            continue
        channels = [send["channel"]] + ([send["fallback"]] if send.get("fallback") else [])
        missing = [c for c in channels if c not in source.template.variants]
        if missing:
            report.add((*where, "channel"), f"template {source.template.id!r} has no {', '.join(missing)} variant")
            continue
        if render_templates:
            digest_event = step["digest"]["event"] if kind_of(step) == "digest" else None
            context = _template_context(raw, trigger_sample, digest_event, known_events)
            _test_render(report, where, step, source, channels, context)


def check_definition(path: Path, templates: Mapping[str, TemplateSource], *,
                     event_types: Collection[str] | None = None,
                     render_templates: bool = False, allowed_hosts: Collection[str] | None = None,
                     ) -> tuple[JourneyDefinition | None, list[Problem]]:
    """Checks one definition file; returns the definition (None if it has problems) and the problems.

    ``allowed_hosts`` judges webhook steps' literal hosts (None: not judged, as when a process loads).
    """
    try:
        document = read_document(path)
    except YamlSyntaxError as exc:
        return None, [Problem(str(path), exc.line or 1, exc.problem)]
    report = Report(str(path), document)
    definition = _check_document(report, templates, _event_types() if event_types is None else event_types,
                                 render_templates=render_templates, allowed_hosts=allowed_hosts)
    return definition, report.problems


def _check_document(report: Report, templates: Mapping[str, TemplateSource], known: Collection[str], *,
                    render_templates: bool, allowed_hosts: Collection[str] | None) -> JourneyDefinition | None:
    """Every check of one definition document (``report.document``); the definition, or None on a problem.

    A document the schema refuses is still content-checked as far as its shape allows, so one run
    names every mistake (`_problems_beyond_the_schema`).
    """
    _schema_problems(report)
    if report.problems:
        report.problems.extend(_problems_beyond_the_schema(report, templates, known, render_templates, allowed_hosts))
        return None
    checked = _check_content(report, templates, known, render_templates, allowed_hosts)
    if report.problems:
        return None
    raw: dict[str, Any] = report.document.data
    used = {send["template"] for _, _, send in _referenced_templates(raw["steps"])}
    return JourneyDefinition(
        id=str(raw["id"]),
        version=int(raw["version"]),
        trigger_event=checked.trigger,
        trigger_filter=raw["trigger"].get("filter"),
        entry_rule=checked.rule,
        key_path=checked.key_path,
        listeners=checked.listeners,
        exit_events=checked.exits,
        steps=with_journey_defaults(_typed_steps(raw["steps"], checked.resolved_keys), raw.get("priority"),
                                    raw.get("caps")),
        templates={t: templates[t].template for t in sorted(used)},
        source_file=report.file,
        goal=checked.goal,
        holdout_percent=int(raw.get("holdout_percent") or 0),
    )


def _problems_beyond_the_schema(schema_report: Report, templates: Mapping[str, TemplateSource],
                                known: Collection[str], render_templates: bool,
                                allowed_hosts: Collection[str] | None) -> list[Problem]:
    """The content checks' problems on a document the schema refused, so one run names every mistake.

    The checks assume the schema's shape: where a refused part trips one (a missing key, a wrong
    type), the problems found until then stand and the rest wait for the next run. A line the schema
    already flagged gets no second problem.
    """
    flagged = {problem.line for problem in schema_report.problems}
    report = Report(schema_report.file, schema_report.document)
    try:
        _check_content(report, templates, known, render_templates, allowed_hosts)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        pass  # the schema's problems say why; see the docstring
    return [problem for problem in report.problems if problem.line not in flagged]


@dataclass(frozen=True)
class _Checked:
    """What the content checks resolved, for building the definition."""

    trigger: str
    rule: EntryRule
    key_path: str | None
    exits: tuple[Listener, ...]
    listeners: tuple[Listener, ...]
    resolved_keys: Mapping[str, str]
    goal: Goal | None


def _check_content(report: Report, templates: Mapping[str, TemplateSource], known: Collection[str],
                   render_templates: bool, allowed_hosts: Collection[str] | None) -> _Checked:
    """Every check beyond the schema's (events, expressions, keys, templates, steps, goal), into ``report``."""
    raw: dict[str, Any] = report.document.data
    trigger = raw["trigger"]["event"]
    if trigger not in known:
        report.add(("trigger", "event"), f"unknown event type {trigger!r}; known: {', '.join(sorted(known))}")
    trigger_sample = sample_for(trigger, known)
    if raw["trigger"].get("filter") and trigger_sample:
        check_expression(report, ("trigger", "filter"), raw["trigger"]["filter"], trigger_sample,
                          CONTEXT_ROOTS - {"journey"})
    entry = raw.get("entry") or {}
    rule = EntryRule(entry.get("rule", EntryRule.ONCE_PER_KEY.value))
    key_path = entry.get("key")
    if rule is EntryRule.ONCE_PER_KEY and not key_path:
        report.add(("entry",), "entry rule once_per_key needs a key (e.g. payload.order_id)")
    if key_path:
        check_key(report, ("entry", "key"), key_path, trigger_sample, trigger)
    exits: list[Listener] = []
    for index, item in enumerate(raw.get("exit") or ()):
        event_type = item["event"]
        if event_type not in known:
            report.add(("exit", index, "event"), f"unknown event type {event_type!r}")
            continue
        sample = sample_for(event_type, known)
        if item.get("when"):
            check_expression(report, ("exit", index, "when"), item["when"], sample, CONTEXT_ROOTS - {"journey"})
        if item.get("key"):
            check_key(report, ("exit", index, "key"), item["key"], sample, event_type)
        exits.append(Listener(event_type, listener_key(item.get("key"), key_path, sample), item.get("when")))
    _check_steps(report, raw, templates, known, trigger_sample, render_templates, allowed_hosts)
    for where, problem in caps_problems(raw):
        report.add(where, problem)

    _goal_checks.check_steps(report, raw)
    goal, goal_listener = _goal_checks.check_goal(report, raw, known, key_path)
    listeners: list[Listener] = []
    resolved_keys: dict[str, str] = {}
    for step, _where in walk(raw["steps"]):
        kind = kind_of(step)
        if kind in ("wait_for", "digest") and "event" in step[kind]:
            body = step[kind]
            listener = Listener(body["event"], listener_key(body.get("key"), key_path,
                                                             sample_for(body["event"], known)), body.get("when"))
            if listener.key_path:
                # The snapshot carries the resolved key, so the interpreter matches on what the router used.
                resolved_keys[str(step["id"])] = listener.key_path
            if listener not in listeners:
                listeners.append(listener)
    if goal_listener is not None and goal_listener not in listeners:
        listeners.append(goal_listener)
    for listener in (*exits, *listeners):
        if rule is EntryRule.EVERY_TIME:
            report.add(("entry", "rule"), f"every_time journeys cannot react to {listener.event_type}: their "
                                          "instances are addressed by event id (use one_active or once_per_key)")
            break
        if rule is EntryRule.ONCE_PER_KEY and listener.key_path is None:
            report.add(("entry", "key"), f"{listener.event_type} has no field {key_path!r}: give its listener "
                                         "a key so the event can find the instance")
    return _Checked(trigger, rule, key_path, tuple(exits), tuple(listeners), resolved_keys, goal)


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


def _expressions(raw: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every expression of a schema-valid definition document: where it is, and its source."""
    if raw["trigger"].get("filter"):
        yield "trigger.filter", raw["trigger"]["filter"]
    for index, item in enumerate(raw.get("exit") or ()):
        if item.get("when"):
            yield f"exit.{index}.when", item["when"]
    if (raw.get("goal") or {}).get("filter"):
        yield "goal.filter", raw["goal"]["filter"]
    for step, path in walk(raw["steps"]):
        kind = kind_of(step)
        body = step[kind] or {}
        where = ".".join(map(str, path))
        if kind in ("wait_for", "digest") and body.get("when"):
            yield f"{where}.{kind}.when", body["when"]
        if kind == "branch":
            for number, case in enumerate(body["cases"]):
                yield f"{where}.branch.cases.{number}.when", case["when"]


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
        checked = _check_template(Path(f"{file}/templates/{name}"), document, problems)
        if checked is not None and checked.id != name:
            problems.append(Problem(file, 1, f"template {name!r} carries the id {checked.id!r}"))
        elif checked is not None:
            templates[name] = TemplateSource(checked, f"{file}/templates/{name}", document)
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
    rendered_with = {raw["trigger"]["event"], *(step["digest"].get("event") for step, _ in walk(raw["steps"])
                                                if kind_of(step) == "digest" and isinstance(step["digest"], Mapping))} \
        if isinstance(raw["steps"], list) else set()
    report = Report(file, LocatedDocument(raw))
    compiled = _check_document(report, templates, _PublishedEvents(builtin), allowed_hosts=None,
                               render_templates=bool(rendered_with) and rendered_with <= builtin)
    problems += report.problems
    if compiled is None or problems:
        return problems
    # Expressions over events this process has no sample of were not checked above; each must parse at least.
    for where, source in _expressions(raw):
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


def _typed_steps(raw: Sequence[_RawStep], keys: Mapping[str, str]) -> tuple[Step, ...]:
    """The document's steps as typed data, each listening step with its resolved instance key."""
    def resolve(step: Step) -> Step:
        if isinstance(step, (WaitForStep, DigestStep)) and step.id in keys:
            return replace(step, key=keys[step.id])
        return step

    return map_steps(decode_steps(raw), resolve)


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
    problems.extend(Problem(file, line, message) for file, line, message in source_problems)
    definitions: list[JourneyDefinition] = []
    seen: dict[str, str] = {}
    for path in sorted((root / "definitions").glob("*.yaml")):
        definition, found = check_definition(path, templates, event_types=known, render_templates=render_templates,
                                             allowed_hosts=allowed_hosts)
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
