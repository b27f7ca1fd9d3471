"""The checks of a definition beyond its JSON Schema, over the typed `JourneyDocument`.

Events and expressions (against each event type's sample), keys, durations, splits, delays,
webhooks, send topics (`journeys._topic_checks`), templates (test-rendered for each send), caps,
goals and listeners. Each problem is
reported at the document path of the typed node it concerns (`journeys.steps.walk` gives a
step's), so it names ``file:line`` without reading the document.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from activities.topics import TopicCatalog
from journeys import _goal_checks
from journeys._caps import caps_problems
from journeys._checks import CONTEXT_ROOTS, check_expression, check_key, listener_key, path_problem, sample_for
from journeys._templates import TemplateSource, render_problems, template_context
from journeys._topic_checks import check_topic
from journeys.durations import check_duration
from journeys.goals import Goal
from journeys.model import EntryRule, JourneyDocument, Listener
from journeys.paths import lookup
from journeys.problems import Report
from journeys.steps import (
    BranchStep,
    DelayStep,
    DigestStep,
    SplitStep,
    Step,
    StepPath,
    WaitForStep,
    WebhookStep,
    sending,
    walk,
)
from journeys.timing import parse_timestamp
from journeys.webhook_check import webhook_problems


@dataclass(frozen=True)
class Checked:
    """What the checks resolved, for building the definition."""

    listeners: tuple[Listener, ...]
    exits: tuple[Listener, ...]
    resolved_keys: Mapping[str, str]
    goal: Goal | None


def _durations(step: Step) -> tuple[tuple[str, str | None], ...]:
    """The options of ``step`` that hold a duration (``offset`` a signed one), checked for range beyond the schema.

    Webhook durations are checked by `journeys.webhook_check` with the rest of the step.
    """
    match step:
        case DelayStep():
            return ("duration", step.duration), ("after", step.after), ("offset", step.offset)
        case WaitForStep():
            return (("timeout", step.timeout),)
        case DigestStep():
            return (("window", step.window),)
    return ()


def _check_listening(report: Report, step: WaitForStep | DigestStep, path: StepPath,
                     known: Collection[str]) -> None:
    kind = step.KIND.value
    if step.event not in known:
        report.add((*path, kind, "event"), f"unknown event type {step.event!r}")
    sample = sample_for(step.event, known)
    if step.when and sample:
        check_expression(report, (*path, kind, "when"), step.when, sample, CONTEXT_ROOTS - {"journey"})
    if step.key:
        check_key(report, (*path, kind, "key"), step.key, sample, step.event)


def _check_delay(report: Report, step: DelayStep, path: StepPath, trigger_sample: Mapping[str, Any]) -> None:
    if step.after is not None and step.until_local_time is None:
        report.add((*path, "delay", "after"), "after only goes with until_local_time")
    if step.offset is not None and step.until is None:
        report.add((*path, "delay", "offset"), "offset only goes with until")
    if step.until is not None and trigger_sample:
        problem = path_problem(trigger_sample, step.until.split("."), CONTEXT_ROOTS - {"journey"})
        if problem is None and parse_timestamp(lookup(trigger_sample, step.until)) is None:
            problem = "is not a timestamp in the event"
        if problem:
            report.add((*path, "delay", "until"), f"until {step.until!r}: {problem}")


def _check_steps(report: Report, document: JourneyDocument, templates: Mapping[str, TemplateSource],
                 known: Collection[str], trigger_sample: Mapping[str, Any], render_templates: bool,
                 allowed_hosts: Collection[str] | None, topics: TopicCatalog | None) -> None:
    seen: set[str] = set()
    saved: set[str] = set()
    for step, path in walk(document.steps):
        if step.id in seen:
            report.add((*path, "id"), f"step id {step.id!r} is used twice (ids name sends and positions)")
        seen.add(step.id)
        kind = step.KIND.value
        for option, value in _durations(step):
            if value:
                try:
                    check_duration(value)
                except ValueError as exc:
                    report.add((*path, kind, option), f"{kind}.{option}: {exc}")
        match step:
            case WaitForStep() | DigestStep() if step.event:
                _check_listening(report, step, path, known)
            case BranchStep(cases=cases):
                for index, case in enumerate(cases):
                    check_expression(report, (*path, "branch", "cases", index, "when"), case.when,
                                     trigger_sample, CONTEXT_ROOTS)
            case SplitStep(variants=variants):
                names = [v.name for v in variants]
                if sum(v.percent for v in variants) != 100:
                    report.add((*path, "split", "variants"), "split percentages must add up to 100")
                if len(set(names)) != len(names):
                    report.add((*path, "split", "variants"), "split variant names must be unique")
            case WebhookStep(save_as=save_as):
                for relative, message in webhook_problems(step, allowed_hosts):
                    report.add((*path, "webhook", *relative), message)
                if save_as in saved:
                    report.add((*path, "webhook", "save_as"), f"save_as {save_as!r} is used twice")
                if save_as:
                    saved.add(save_as)
            case DelayStep():
                _check_delay(report, step, path, trigger_sample)
    for sender, where in sending(document.steps):
        options = sender.send
        if topics is not None:
            check_topic(report, sender, where, topics)
        source = templates.get(options.template)
        if source is None:
            report.add((*where, "template"), f"unknown template {options.template!r}")
            continue
        channels = [options.channel] + ([options.fallback] if options.fallback else [])
        missing = [c for c in channels if c not in source.template.variants]
        if missing:
            report.add((*where, "channel"), f"template {source.template.id!r} has no {', '.join(missing)} variant")
            continue
        if render_templates:
            digest_event = sender.event if isinstance(sender, DigestStep) else None
            context = template_context(document, trigger_sample, digest_event, known)
            report.problems.extend(render_problems(sender, source, channels, context))


def check_content(report: Report, document: JourneyDocument, templates: Mapping[str, TemplateSource],
                  known: Collection[str], render_templates: bool, allowed_hosts: Collection[str] | None,
                  topics: TopicCatalog | None = None) -> Checked:
    """Every check beyond the schema's (events, expressions, keys, templates, steps, goal), into ``report``.

    ``topics`` judges send steps' topics (None: not judged, as when a process loads or the topics
    file itself has problems).
    """
    trigger = document.trigger_event
    if trigger not in known:
        report.add(("trigger", "event"), f"unknown event type {trigger!r}; known: {', '.join(sorted(known))}")
    trigger_sample = sample_for(trigger, known)
    if document.trigger_filter and trigger_sample:
        check_expression(report, ("trigger", "filter"), document.trigger_filter, trigger_sample,
                         CONTEXT_ROOTS - {"journey"})
    rule, key_path = document.entry_rule, document.entry_key
    if rule is EntryRule.ONCE_PER_KEY and not key_path:
        report.add(("entry",), "entry rule once_per_key needs a key (e.g. payload.order_id)")
    if key_path:
        check_key(report, ("entry", "key"), key_path, trigger_sample, trigger)
    exits: list[Listener] = []
    for index, written in enumerate(document.exits):
        event_type = written.event_type
        if event_type not in known:
            report.add(("exit", index, "event"), f"unknown event type {event_type!r}")
            continue
        sample = sample_for(event_type, known)
        if written.when:
            check_expression(report, ("exit", index, "when"), written.when, sample, CONTEXT_ROOTS - {"journey"})
        if written.key_path:
            check_key(report, ("exit", index, "key"), written.key_path, sample, event_type)
        exits.append(Listener(event_type, listener_key(written.key_path, key_path, sample), written.when))
    _check_steps(report, document, templates, known, trigger_sample, render_templates, allowed_hosts, topics)
    for where, problem in caps_problems(document):
        report.add(where, problem)

    _goal_checks.check_steps(report, document.steps)
    goal, goal_listener = _goal_checks.check_goal(report, document, known, key_path)
    listeners: list[Listener] = []
    resolved_keys: dict[str, str] = {}
    for step, _ in walk(document.steps):
        if isinstance(step, (WaitForStep, DigestStep)) and step.event:
            listener = Listener(step.event, listener_key(step.key, key_path, sample_for(step.event, known)),
                                step.when)
            if listener.key_path:
                # The snapshot carries the resolved key, so the interpreter matches on what the router used.
                resolved_keys[step.id] = listener.key_path
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
    return Checked(tuple(listeners), tuple(exits), resolved_keys, goal)
