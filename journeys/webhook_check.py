"""Validation of a ``webhook`` step beyond the schema: templates compile, a literal host is allowed.

The URL's host can only be judged here when it is literal (no template markup before the path);
a templated host is judged by the worker on every call. The allow-list is the one the command
runs with (``EVENTFLOW_WEBHOOK_ALLOWED_HOSTS``); the consumer and worker load journeys without
judging hosts, so a host missing from one process's list never hides a journey from routing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from journeys.durations import check_duration

_MARKUP = ("{{", "{%", "{#")


def literal_host(url: str) -> str | None:
    """The host of ``url`` when the scheme and authority hold no template markup, else None."""
    parts = urlsplit(url)
    authority = f"{parts.scheme}://{parts.netloc}"
    if any(mark in authority for mark in _MARKUP) or not parts.netloc:
        return None
    return parts.hostname


def webhook_problems(body: Mapping[str, Any], allowed_hosts: Collection[str] | None
                     ) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of one webhook step's options: (path relative to the options, message).

    Args:
        allowed_hosts: the allow-list to judge a literal host by; None to not judge hosts.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    jinja = SandboxedEnvironment()
    for option in ("url", "body"):
        if isinstance(body.get(option), str):
            try:
                jinja.parse(body[option])
            except TemplateSyntaxError as exc:
                problems.append(((option,), f"webhook.{option} does not compile: {exc.message}"))
    url = str(body.get("url", ""))
    scheme = urlsplit(url).scheme
    if not any(mark in scheme for mark in _MARKUP) and scheme not in ("http", "https"):
        problems.append((("url",), f"webhook.url must be an http or https URL, not {url!r}"))
    host = literal_host(url)
    if host is not None and allowed_hosts is not None and host not in {h.lower() for h in allowed_hosts}:
        listed = ", ".join(sorted(allowed_hosts)) or "none"
        problems.append((("url",), f"webhook host {host!r} is not in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS ({listed})"))
    durations: list[tuple[tuple[str | int, ...], Any]] = [(("timeout",), body.get("timeout"))]
    retry = body.get("retry") or {}
    durations += [(("retry", name), retry.get(name)) for name in ("initial_interval", "max_interval")]
    for where, value in durations:
        if isinstance(value, str):
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
