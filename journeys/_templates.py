"""Template files: read into `Template`s (their shape checked), compiled, and test-rendered for a send.

A template file is parsed first (`read_template`: id, default locale, a variant per channel and
locale, each with its parts); compiling and rendering then run over the typed `Template`, and
every problem names the template file and the line of the part.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from activities.contact import sample_template_view
from activities.rendering import TemplateRenderError, is_html_part, render, render_html
from core.vocabulary import CHANNELS, DEVICE_CHANNELS
from journeys._checks import sample_for
from journeys._yaml import DocPath, LocatedDocument, YamlSyntaxError, read_document
from journeys.model import JourneyDocument, Template
from journeys.problems import Problem, Report
from journeys.steps import DigestStep, SendStep, SplitStep, WebhookStep, walk
from journeys.webhook_check import ResponseSample


@dataclass(frozen=True)
class TemplateSource:
    """A loaded template and where each of its variants is, for error messages."""

    template: Template
    file: str
    document: LocatedDocument

    def line_of(self, channel: str, locale: str, part: str) -> int | None:
        """The line of one part of one variant (None when the template came without its file)."""
        return self.document.line_of(("channels", channel, locale, *part.split("/")))


@cache
def _jinja() -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=False)


#: Parts of a variant that hold a mapping of named sources (``content_variables/<name>``).
_GROUPS = ("content_variables", "data")


def parts(variant: Mapping[str, Any]) -> list[str]:
    """The Jinja2 sources of a variant: subject, body, the email's HTML part, each provider template
    variable, and a push variant's title, deep link and each data value."""
    names = [p for p in ("subject", "title", "body", "html", "link") if p in variant]
    for group in _GROUPS:
        values = variant.get(group)
        if isinstance(values, Mapping):
            names += [f"{group}/{name}" for name in values]
    return names


def part_source(variant: Mapping[str, Any], part: str) -> Any:
    """The source of one of `parts` (a string in a well-formed template)."""
    group, _, name = part.partition("/")
    if name and group in _GROUPS:
        return variant[group][name]
    return variant.get(part)


def _push_problems(report: Report, where: DocPath, channel: str, locale: str, variant: Mapping[str, Any]) -> None:
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


def read_template(path: Path, document: LocatedDocument, report: Report) -> Template | None:
    """The template a file's document holds, its shape problems in ``report``.

    The variants with a problem are left out (so the others can still be compiled); None when the
    file has no channels to read at all.
    """
    raw = document.data
    if not isinstance(raw, Mapping):
        report.add((), "a template file must be a mapping with id, default_locale and channels")
        return None
    template_id = str(raw.get("id", path.stem))
    default_locale = raw.get("default_locale", "en")
    channels = raw.get("channels")
    if not isinstance(channels, Mapping) or not channels:
        report.add(("channels",), f"channels must map a channel ({', '.join(CHANNELS)}) to its locales")
        return None
    variants: dict[str, dict[str, dict[str, Any]]] = {}
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
            _push_problems(report, where, channel, locale, variant)
            variants.setdefault(channel, {})[locale] = dict(variant)
    return Template(id=template_id, default_locale=str(default_locale), variants=variants)


def compile_problems(source: TemplateSource) -> list[Problem]:
    """Every part of every variant of a read template that Jinja2 cannot compile, at its line."""
    template = source.template
    problems: list[Problem] = []
    for channel, locales in template.variants.items():
        for locale, variant in locales.items():
            for part in parts(variant):
                text = part_source(variant, part)
                if not isinstance(text, str):
                    continue
                try:
                    _jinja().parse(text)
                except TemplateSyntaxError as exc:
                    # A block scalar's error is at its line within the part.
                    offset = (exc.lineno or 1) if text.count("\n") else 0
                    line = (source.line_of(channel, locale, part) or 0) + offset
                    problems.append(Problem(source.file, max(1, line), f"template {template.id} {channel}/{locale} {part} does not "
                                            f"compile: {exc.message}"))
    return problems


def check_template(path: Path, document: LocatedDocument, problems: list[Problem]) -> TemplateSource | None:
    """A template file read and compiled; None (its problems appended to ``problems``) when it is not usable."""
    report = Report(str(path), document)
    template = read_template(path, document, report)
    source = TemplateSource(template, str(path), document) if template is not None else None
    broken = compile_problems(source) if source is not None else []
    problems.extend([*broken, *report.problems])
    return None if broken or report.problems else source


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
        source = check_template(path, document, problems)
        if source is None:
            continue
        if source.template.id in sources:
            problems.append(Problem(str(path), document.line_of(("id",)) or 1,
                                    f"template id {source.template.id!r} is also used by "
                                    f"{sources[source.template.id].file}"))
            continue
        sources[source.template.id] = source
    return sources, problems


def template_context(document: JourneyDocument, trigger_sample: Mapping[str, Any], digest_event: str | None,
                     known: Collection[str]) -> dict[str, Any]:
    """What a send's template is test-rendered with: the trigger's sample, the journey, webhooks, profile,
    the preference link, digest."""
    variants = {step.id: step.variants[0].name for step, _ in walk(document.steps)
                if isinstance(step, SplitStep) and step.variants}
    context: dict[str, Any] = {**trigger_sample, "journey": {
        "id": document.id, "version": document.version, "content_hash": "0" * 16, "variants": variants}}
    context["webhooks"] = {step.save_as: ResponseSample() for step, _ in walk(document.steps)
                           if isinstance(step, WebhookStep) and step.save_as}
    context["profile"] = sample_template_view()  # resolved from the customer's profile at send time
    # The send activity links each message to the customer's preference page (eventflow preferences).
    context["preferences_url"] = "https://preferences.example.com/p/sample-token"
    if digest_event is not None:
        event = sample_for(digest_event, known)
        context["digest"] = {"events": [event, event], "count": 2}
    return context


def render_problems(step: SendStep | DigestStep, source: TemplateSource, channels: Sequence[str],
                    context: Mapping[str, Any]) -> list[Problem]:
    """Renders each variant a send can use with sample data, as the send activity would; what fails, at its line."""
    template = source.template
    problems: list[Problem] = []
    for channel in channels:
        for locale, variant in template.variants.get(channel, {}).items():
            for part in parts(variant):
                text = part_source(variant, part)
                if not isinstance(text, str):
                    continue
                line = source.line_of(channel, locale, part) or 1
                label = f"template {template.id} {channel}/{locale} {part} (step {step.id})"
                undeclared = meta.find_undeclared_variables(_jinja().parse(text)) - set(context)
                if undeclared:
                    problems.append(Problem(source.file, line, f"{label} uses unknown variables {sorted(undeclared)}"))
                    continue
                try:
                    if part == "html":
                        render_html(template.id, text, context)  # as the send activity does: CSS inlined too
                    else:
                        render(template.id, text, context, html=is_html_part(part))
                except TemplateRenderError as exc:
                    hint = (" (a dict key like items/keys/values needs x[\"items\"] syntax)"
                            if isinstance(exc.__cause__, TypeError) else "")
                    problems.append(Problem(source.file, line, f"{label} does not render with sample "
                                                               f"data: {exc.problem}{hint}"))
    return problems
