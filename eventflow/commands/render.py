"""``eventflow journeys render JOURNEY STEP --event FILE``: one send step's message, rendered as it would be sent.

Authors check a template's subject, text and HTML (autoescaped, CSS inlined) for a real event
before a customer sees them. The message is rendered by the send activity's own code
(`activities.send.render_notification`) with the context a journey gives it: the event, the
``journey`` block, the ``profile`` (the event's customer stands in for it, as in ``simulate``)
and, for a digest, the event as the one collected. Nothing is sent and nothing is opened: the
parts are printed, or written to files in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.contact import ContactPoints, pick_locale, resolve_recipient
from activities.notifications import SendNotificationInput
from activities.rendering import TemplateRenderError
from activities.send import RenderedParts, render_notification
from core.errors import EventflowError
from events.model import CustomerEvent
from journeys.model import JourneyDefinition
from journeys.steps import DigestStep, SendStep, walk


class RenderCommandError(EventflowError):
    """The step cannot be rendered: unknown journey or step, a step that sends nothing, a bad event."""


@dataclass(frozen=True)
class RenderedStep:
    """A step's message as the send activity would render it, and which variant that was."""

    channel: str
    template_id: str
    locale: str
    parts: RenderedParts


@dataclass(frozen=True)
class _EventProfile:
    points: ContactPoints

    async def contact_points(self, customer_id: str) -> ContactPoints:
        return self.points


async def render_step(definition: JourneyDefinition, step_id: str, event: CustomerEvent, *,
                      channel: str | None = None) -> RenderedStep:
    """Renders ``step_id``'s message for ``event`` on the step's channel (or ``channel``, e.g. its fallback).

    Raises:
        RenderCommandError: no such step, it sends nothing, or its template has no variant for the channel.
        TemplateRenderError: a part does not render.
    """
    found = [step for step, _ in walk(definition.steps) if step.id == step_id]
    if not found:
        known = ", ".join(step.id for step, _ in walk(definition.steps) if isinstance(step, (SendStep, DigestStep)))
        raise RenderCommandError(f"journey {definition.id} has no step {step_id!r} (send steps: {known or 'none'})")
    step = found[0]
    if not isinstance(step, (SendStep, DigestStep)):
        raise RenderCommandError(f"step {step_id!r} is a {step.KIND} step and sends nothing")
    options = step.send
    channel = channel or options.channel
    template = definition.templates[options.template]
    variants: Mapping[str, Any] = template.variants.get(channel) or {}
    if not variants:
        raise RenderCommandError(f"template {template.id} has no {channel} variant")
    locale = pick_locale(event.customer.locale or "", variants, template.default_locale)
    variant: Mapping[str, Any] = variants.get(locale) or next(iter(variants.values()))
    context: dict[str, Any] = {**event.as_context(), "journey": {
        "id": definition.id, "version": definition.version, "content_hash": definition.snapshot()["content_hash"],
        "variants": {}}}
    if isinstance(step, DigestStep):
        context["digest"] = {"events": [dict(event.as_context())], "count": 1}
    # The worker links each message to the customer's preference page; a render shows where it goes.
    context["preferences_url"] = "https://preferences.example.com/p/<signed-link>"
    notification = SendNotificationInput(
        idempotency_key=f"render/{step_id}", channel=channel, customer=event.customer, template_id=template.id,
        locale=locale, body_template=str(variant.get("body", "")), subject_template=variant.get("subject"),
        html_template=variant.get("html"), context=context, journey_id=definition.id, step_id=step_id,
        provider_template_id=str(variant.get("content_sid") or variant.get("sendgrid_template_id") or ""),
        template_variable_templates={str(k): str(v) for k, v in (variant.get("content_variables") or {}).items()},
        variants={str(name): dict(v) for name, v in variants.items()}, default_locale=template.default_locale)
    customer = event.customer
    profile = ContactPoints(email=customer.email, phone=customer.phone, whatsapp=customer.whatsapp,
                            first_name=customer.first_name, timezone=customer.timezone, locale=customer.locale,
                            attributes=dict(customer.attributes))
    recipient = await resolve_recipient(_EventProfile(profile), notification)
    if recipient is not None:
        notification = recipient.notification
    parts = await render_notification(notification)
    return RenderedStep(channel, template.id, notification.locale, parts)


def write_parts(rendered: RenderedStep, out: Path) -> list[Path]:
    """Writes ``subject.txt``, ``text.txt`` and ``html.html`` (those the message has) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"subject.txt": rendered.parts.subject, "text.txt": rendered.parts.body, "html.html": rendered.parts.html}
    written: list[Path] = []
    for name, content in files.items():
        if content is not None:
            path = out / name
            path.write_text(content + "\n")
            written.append(path)
    return written


def _read_event(path: Path) -> CustomerEvent:
    from eventflow.commands.simulate import SimulationError, decode_event

    text = path.read_text()
    try:
        # One event as JSON (pretty-printed or not), else the first line of a JSON Lines file.
        return decode_event(text, str(path))
    except SimulationError:
        first = next((line for line in text.splitlines() if line.strip()), "")
        if first == text.strip():
            raise
        return decode_event(first, f"{path}:1")


def _handle(args: argparse.Namespace) -> int:
    from journeys.loader import validate_folder

    report = validate_folder(Path(args.dir) if args.dir else None)
    chosen = [d for d in report.definitions if d.id == args.journey]
    if not chosen:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        known = ", ".join(sorted(d.id for d in report.definitions))
        raise RenderCommandError(f"no valid journey {args.journey!r} (valid journeys: {known or 'none'})")
    event = _read_event(Path(args.event))
    try:
        rendered = asyncio.run(render_step(chosen[0], args.step, event, channel=args.channel))
    except TemplateRenderError as exc:
        print(f"eventflow: {exc}", file=sys.stderr)
        return 1
    print(f"{args.journey}/{args.step}: {rendered.channel} {rendered.template_id}/{rendered.locale}")
    if args.out:
        for path in write_parts(rendered, Path(args.out)):
            print(f"wrote {path}")
        return 0
    parts = rendered.parts
    if parts.subject is not None:
        print(f"--- subject\n{parts.subject}")
    print(f"--- text\n{parts.body}")
    if parts.html is not None:
        print(f"--- html\n{parts.html}")
    for name, value in parts.variables.items():
        print(f"--- variable {name}\n{value}")
    return 0


def register_render(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``render`` to the ``eventflow journeys`` subcommands."""
    render = actions.add_parser("render", help="render a send step's subject, text and HTML for an event "
                                               "(sends and opens nothing)")
    render.add_argument("journey", help="journey id")
    render.add_argument("step", help="id of a send or digest step")
    render.add_argument("--event", required=True, help="JSON file of the event (one event, or the first line of a "
                                                       "JSON Lines file)")
    render.add_argument("--out", help="folder to write subject.txt, text.txt and html.html to (default: print)")
    render.add_argument("--channel", help="render this channel's variant (e.g. the step's fallback)")
    render.add_argument("--dir", help="folder with definitions/ and templates/")
    render.set_defaults(handler=_handle)
