"""Renders notification templates in Jinja2's sandbox; a missing variable is an error, not a blank."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from eventflow.errors import EventflowError


class TemplateRenderError(EventflowError):
    """A template does not compile or references a missing variable."""

    def __init__(self, template_id: str, problem: str) -> None:
        super().__init__(f"template {template_id}: {problem}")
        self.template_id = template_id
        self.problem = problem


@cache
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def render(template_id: str, source: str, context: Mapping[str, Any]) -> str:
    """Renders ``source`` with ``context``; raises `TemplateRenderError` on any template problem."""
    try:
        return _environment().from_string(source).render(**context).strip()
    except TemplateError as exc:
        raise TemplateRenderError(template_id, str(exc)) from exc
