"""Validation of a typed ``webhook`` step beyond the schema: templates compile, a literal host and port are allowed.

The URL's host can only be judged here when it is literal (no template markup before the path);
a templated host is judged by the worker on every call. The allow-list is the one the command
runs with (``EVENTFLOW_WEBHOOK_ALLOWED_HOSTS``); the consumer and worker load journeys without
judging hosts, so a host missing from one process's list never hides a journey from routing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from activities.webhook import HostList
from journeys.durations import check_duration
from journeys.steps import WebhookBody, WebhookStep

_MARKUP = ("{{", "{%", "{#")


def literal_host(url: str) -> str | None:
    """The host of ``url`` when the scheme and authority hold no template markup, else None."""
    parts = urlsplit(url)
    authority = f"{parts.scheme}://{parts.netloc}"
    if any(mark in authority for mark in _MARKUP) or not parts.netloc:
        return None
    return parts.hostname


def _body_templates(body: WebhookBody | None, where: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every template of a body: the string itself, or each string leaf of a mapping or list."""
    if isinstance(body, str):
        return [(where, body)]
    if isinstance(body, dict):
        return [found for key, value in body.items() for found in _body_templates(value, (*where, str(key)))]
    if isinstance(body, list):
        return [found for i, value in enumerate(body) for found in _body_templates(value, (*where, i))]
    return []


def webhook_problems(step: WebhookStep, allowed_hosts: Collection[str] | None
                     ) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of one webhook step's options: (path relative to the options, message).

    Args:
        allowed_hosts: the allow-list to judge a literal host by; None to not judge hosts.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    jinja = SandboxedEnvironment()
    for where, source in [(("url",), step.url), *_body_templates(step.body, ("body",))]:
        try:
            jinja.parse(source)
        except TemplateSyntaxError as exc:
            problems.append((where, f"webhook.{'.'.join(map(str, where))} does not compile: {exc.message}"))
    parts = urlsplit(step.url)
    scheme = parts.scheme
    if not any(mark in scheme for mark in _MARKUP) and scheme not in ("http", "https"):
        problems.append((("url",), f"webhook.url must be an http or https URL, not {step.url!r}"))
    host = literal_host(step.url)
    if host is not None and allowed_hosts is not None and scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            problems.append((("url",), f"webhook.url has a port out of range: {step.url!r}"))
        else:
            if not HostList(allowed_hosts).allows(scheme, host, port):
                listed = ", ".join(sorted(allowed_hosts)) or "none"
                named = repr(host) if port is None else f"'{host}:{port}'"
                problems.append((("url",), f"webhook host {named} is not in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS ({listed}); "
                                           "a host without a port allows 443 for https, 80 for http"))
    durations: list[tuple[tuple[str | int, ...], str]] = [(("timeout",), step.timeout)]
    if step.retry is not None:
        durations += [(("retry", "initial_interval"), step.retry.initial_interval),
                      (("retry", "max_interval"), step.retry.max_interval)]
    for where, value in durations:
        try:
            check_duration(value)
        except ValueError as exc:
            problems.append((where, f"webhook.{'.'.join(map(str, where))}: {exc}"))
    return problems


class ResponseSample(dict[str, Any]):
    """What validation renders templates with in place of a saved webhook response (shape unknown).

    Any key or attribute is another sample, and it prints as ``sample``, so ``{{ webhooks.crm.tier }}``
    test-renders while a typo in the rest of the template still fails.
    """

    def __missing__(self, key: str) -> ResponseSample:
        return ResponseSample()

    def __str__(self) -> str:
        return "sample"
