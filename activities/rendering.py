"""Renders notification templates in a bounded Jinja2 sandbox; every failure is a `TemplateRenderError`.

A template is author input, so rendering must not be able to exhaust a worker. The bounds:

- **operations**: ``**``, ``*`` and ``%`` are intercepted (no constant folding at compile time,
  where ``{{ 9**(9**9) }}`` used to hang), and refused when their result would be huge (a power
  or product beyond `RenderLimits.max_int_bits`, a repeated or formatted string beyond the output
  limit); ``range`` yields at most `RenderLimits.max_range` items; widths (``center(N)``,
  ``ljust``, ``indent``, ``%Nd``, ``{:>N}``) may not pass the output limit, nor come from
  arguments (``%*d``, ``{:{}}``);
- **time**: template code checks a deadline on every line it runs (a trace function installed
  for the rendering thread only), so loops end at `RenderLimits.time_limit_seconds`;
- **output**: the rendered text may be at most `RenderLimits.max_output_chars` characters.

`render_async` runs `render` on a small thread pool so the activity's event loop never blocks, and
stops waiting after the time limit plus a grace period. A Python thread cannot be killed: should
one C-level operation outrun every check above, its thread runs on after the caller gave up; the
real bound is the operation limits, which keep every single operation small.

HTML parts (`is_html_part`, or ``html=True``) render with autoescaping on. An email's HTML part
renders through `render_html`: autoescaped, then its ``<style>`` rules are inlined into ``style``
attributes with ``css-inline`` (mail clients such as Gmail drop or limit ``<style>`` blocks), with
no stylesheet fetched from the network and links left as written.
"""

from __future__ import annotations

import asyncio
import enum
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType
from typing import Any

import css_inline
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from core.errors import EventflowError

#: The file name Jinja2 gives code compiled from a string: the frames the deadline trace watches.
_TEMPLATE_FILENAME = "<template>"


class RenderFailure(enum.StrEnum):
    """Why a template did not render."""

    SYNTAX = "syntax"
    UNDEFINED = "undefined"
    UNSAFE = "unsafe"
    LIMIT = "limit"
    TIMEOUT = "timeout"
    OUTPUT_SIZE = "output_size"
    ERROR = "error"


class TemplateRenderError(EventflowError):
    """A template does not compile, references a missing variable, breaks a limit or fails while rendering.

    Attributes:
        template_id: the template.
        problem: what went wrong, without the context's values.
        reason: the kind of failure.
    """

    def __init__(self, template_id: str, problem: str, reason: RenderFailure = RenderFailure.ERROR) -> None:
        super().__init__(f"template {template_id}: {problem}")
        self.template_id = template_id
        self.problem = problem
        self.reason = reason


@dataclass(frozen=True)
class RenderLimits:
    """The bounds one render runs within."""

    time_limit_seconds: float = 2.0
    max_output_chars: int = 100_000
    max_source_chars: int = 100_000
    max_int_bits: int = 4096
    max_range: int = 10_000
    #: How long `render_async` waits beyond the time limit for the thread to notice it.
    grace_seconds: float = 1.0


DEFAULT_LIMITS = RenderLimits()


class _LimitExceeded(Exception):
    """Raised inside template code when an operation or the deadline goes past a limit."""

    def __init__(self, problem: str, reason: RenderFailure = RenderFailure.LIMIT) -> None:
        super().__init__(problem)
        self.reason = reason


_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)[^{}]*\}")
_NESTED_FIELD = re.compile(r"\{[^{}]*:[^{}]*\{")
#: String methods and filters whose number arguments are widths (of the result they build).
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH_FILTERS = ("center", "indent", "format")
_FORMAT_FILTER = DEFAULT_FILTERS["format"]
#: How much larger than the output limit inlining may make a message, estimated before it runs.
_INLINE_GROWTH = 20


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox with size checks on the operators and calls that can make huge values."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, limits: RenderLimits, *, autoescape: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False)
        self.limits = limits
        self.globals["range"] = self._range
        for name in _WIDTH_FILTERS:
            self.filters[name] = self._bounded_filter(self.filters[name])

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            self._check_power(left, right)
            return left ** right
        if operator == "*":
            self._check_product(left, right)
            return left * right
        if isinstance(left, str):
            self._check_format(left, right)
        return left % right

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        if isinstance(getattr(__obj, "__self__", None), str) and getattr(__obj, "__name__", "") in _WIDTH_METHODS:
            __self._check_widths(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            self._check_format_spec(owner)
        return super().wrap_str_format(value)

    # --- the checks ---------------------------------------------------------------------------

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > self.limits.max_range:
            raise _LimitExceeded(f"range of {len(numbers)} items is more than {self.limits.max_range}")
        return numbers

    def _bits(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            return 64
        return value.bit_length()

    def _check_power(self, base: Any, exponent: Any) -> None:
        # Only integers grow without bound: floats overflow (an error), decimals round to their precision.
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (base, exponent)):
            return
        if abs(base) > 1 and exponent > 0:
            if self._bits(base) * exponent > self.limits.max_int_bits:
                raise _LimitExceeded(f"power with exponent {exponent} is larger than "
                                     f"{self.limits.max_int_bits} bits")

    def _check_product(self, left: Any, right: Any) -> None:
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and not isinstance(count, bool):
                if len(sequence) * count > self.limits.max_output_chars:
                    raise _LimitExceeded(f"repetition to {len(sequence) * count} items is more than "
                                         f"{self.limits.max_output_chars}")
                return
        if isinstance(left, int) and isinstance(right, int) and \
                self._bits(left) + self._bits(right) > self.limits.max_int_bits:
            raise _LimitExceeded(f"product is larger than {self.limits.max_int_bits} bits")

    def _check_format(self, text: str, values: Any) -> None:
        for match in _FORMAT_WIDTH.finditer(text):
            for number in match.groups():
                if number is not None and number != "*" and int(number) > self.limits.max_output_chars:
                    raise _LimitExceeded(f"format width {number} is more than {self.limits.max_output_chars}")
            if "*" in match.group():
                raise _LimitExceeded("format widths taken from arguments (*) are not allowed")

    def _check_format_spec(self, text: str) -> None:
        if _NESTED_FIELD.search(text):
            raise _LimitExceeded("format widths taken from arguments ({:{}}) are not allowed")
        for width in _BRACE_WIDTH.findall(text):
            if int(width) > self.limits.max_output_chars:
                raise _LimitExceeded(f"format width {width} is more than {self.limits.max_output_chars}")

    def _check_widths(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Numbers given to a width-taking method or filter (``center(80)``) stay below the output limit."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.limits.max_output_chars:
                raise _LimitExceeded(f"width {value} is larger than {self.limits.max_output_chars}")

    def _bounded_filter(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(*args: Any, **kwargs: Any) -> Any:
            # The first argument is the value filtered; for ``format`` it is the format string, and
            # the other arguments are the values formatted, which may be any size.
            if function is _FORMAT_FILTER:
                if args and isinstance(args[0], str):
                    self._check_format(args[0], ())
            else:
                self._check_widths(args[1:], kwargs)
            return function(*args, **kwargs)

        for attribute in ("jinja_pass_arg",):  # keeps @pass_context / @pass_environment working
            if hasattr(function, attribute):
                setattr(bounded, attribute, getattr(function, attribute))
        return bounded


@lru_cache(maxsize=8)
def _environment(limits: RenderLimits, autoescape: bool) -> _BoundedEnvironment:
    return _BoundedEnvironment(limits, autoescape=autoescape)


@lru_cache(maxsize=512)
def _compile(limits: RenderLimits, html: bool, source: str) -> Template:
    # Compiling costs far more than rendering, and a journey sends the same few sources over and over.
    return _environment(limits, html).from_string(source)


def is_html_part(name: str) -> bool:
    """Whether a template part is HTML and so renders autoescaped: ``html``, ``html_body``, ``*.html``."""
    lowered = name.lower()
    return lowered in ("html", "html_body") or lowered.endswith(".html")


class _Deadline:
    """A trace function that raises once the deadline passes, installed on the rendering thread only."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds
        self._seconds = seconds

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if frame.f_code.co_filename != _TEMPLATE_FILENAME:
            return None
        self._check()
        return self._line

    def _line(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        self._check()
        return self._line

    def _check(self) -> None:
        if time.monotonic() > self._at:
            raise _LimitExceeded(f"rendering took longer than {self._seconds:g}s", RenderFailure.TIMEOUT)


def render(template_id: str, source: str, context: Mapping[str, Any], *, html: bool = False,
           limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """Renders ``source`` with ``context`` within ``limits``; raises `TemplateRenderError` on any failure.

    Blocking: call it from a thread (or use `render_async`), never on an event loop.
    """
    if len(source) > limits.max_source_chars:
        raise TemplateRenderError(template_id, f"source is longer than {limits.max_source_chars} characters",
                                  RenderFailure.LIMIT)
    previous = sys.gettrace()
    try:
        template = _compile(limits, html, source)
        # The deadline starts after compiling (bounded by the source size) and covers template code.
        sys.settrace(_Deadline(limits.time_limit_seconds))
        pieces: list[str] = []
        size = 0
        for piece in template.generate(**context):
            size += len(piece)
            if size > limits.max_output_chars:
                raise _LimitExceeded(f"output is longer than {limits.max_output_chars} characters",
                                     RenderFailure.OUTPUT_SIZE)
            pieces.append(piece)
        return "".join(pieces).strip()
    except _LimitExceeded as exc:
        raise TemplateRenderError(template_id, str(exc), exc.reason) from exc
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(template_id, str(exc), RenderFailure.SYNTAX) from exc
    except UndefinedError as exc:
        raise TemplateRenderError(template_id, str(exc), RenderFailure.UNDEFINED) from exc
    except SecurityError as exc:
        raise TemplateRenderError(template_id, str(exc), RenderFailure.UNSAFE) from exc
    except TemplateError as exc:
        raise TemplateRenderError(template_id, str(exc), RenderFailure.ERROR) from exc
    except RecursionError as exc:
        raise TemplateRenderError(template_id, "recursion too deep", RenderFailure.LIMIT) from exc
    except MemoryError as exc:
        raise TemplateRenderError(template_id, "out of memory", RenderFailure.LIMIT) from exc
    except Exception as exc:  # whatever a template does wrong is the template's failure
        raise TemplateRenderError(template_id, f"{type(exc).__name__}: {exc}"[:500], RenderFailure.ERROR) from exc
    finally:
        sys.settrace(previous)


#: No remote stylesheet is ever fetched (a template's ``<link>`` would make the worker call any
#: host); ``<link>`` tags and ``@media`` rules stay in the document for the clients that read them.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=True, keep_at_rules=True)


def inline_styles(template_id: str, html: str, *, limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """``html`` with its ``<style>`` rules moved into ``style`` attributes; raises `TemplateRenderError`.

    Inlining copies each rule onto every element it matches, so a large stylesheet over many
    elements multiplies: the product is bounded before inlining runs, the result after.
    """
    css_chars = _style_chars(html)
    if css_chars * html.count("<") > _INLINE_GROWTH * limits.max_output_chars:
        raise TemplateRenderError(template_id, f"{css_chars} characters of CSS over {html.count('<')} tags is "
                                               f"too much to inline", RenderFailure.LIMIT)
    try:
        inlined = _INLINER.inline(html)
    except css_inline.InlineError as exc:
        raise TemplateRenderError(template_id, f"CSS cannot be inlined: {exc}"[:500], RenderFailure.ERROR) from exc
    if len(inlined) > limits.max_output_chars:
        raise TemplateRenderError(template_id, f"HTML with inlined CSS is longer than {limits.max_output_chars} "
                                               f"characters", RenderFailure.OUTPUT_SIZE)
    return inlined


def _style_chars(html: str) -> int:
    """Characters inside ``<style>`` elements (an unclosed one runs to the end), in one linear scan."""
    lowered, total, at = html.lower(), 0, 0
    while (start := lowered.find("<style", at)) >= 0:
        end = lowered.find("</style", start)
        total += (len(lowered) if end < 0 else end) - start
        if end < 0:
            break
        at = end + 1
    return total


def render_html(template_id: str, source: str, context: Mapping[str, Any], *,
                limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """An email's HTML part: `render` autoescaped, then `inline_styles`. Blocking, like `render`."""
    return inline_styles(template_id, render(template_id, source, context, html=True, limits=limits), limits=limits)


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _render_pool() -> ThreadPoolExecutor:
    # Its own pool: a render stuck in one C-level operation must not starve the loop's default executor.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="render")
        return _executor


async def render_async(template_id: str, source: str, context: Mapping[str, Any], *, html: bool = False,
                       limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """`render` off the event loop; raises `TemplateRenderError` on any failure, including a timeout."""
    return await _off_loop(template_id, lambda: render(template_id, source, context, html=html, limits=limits),
                           limits)


async def render_html_async(template_id: str, source: str, context: Mapping[str, Any], *,
                            limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """`render_html` off the event loop; raises `TemplateRenderError` on any failure, including a timeout."""
    return await _off_loop(template_id, lambda: render_html(template_id, source, context, limits=limits), limits)


async def _off_loop(template_id: str, call: Callable[[], str], limits: RenderLimits) -> str:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_render_pool(), call)
    try:
        return await asyncio.wait_for(future, timeout=limits.time_limit_seconds + limits.grace_seconds)
    except asyncio.TimeoutError as exc:
        raise TemplateRenderError(template_id, f"rendering took longer than {limits.time_limit_seconds:g}s",
                                  RenderFailure.TIMEOUT) from exc
