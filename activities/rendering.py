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
- **allocation**: every operation that builds a string or a list (``~``, ``+``, ``*``, ``%``,
  string methods such as ``replace``/``join``/``format``/``translate``, every filter, slices, and
  turning a value into output) estimates the size of what it would build *before* building it, and
  takes that from the render's budget of `RenderLimits.max_allocated_chars` characters (or list
  items); going past it fails the render. Estimates walk nested values as ``str()`` would print
  them (so ``[s] * 1000`` turned into a string counts a thousand ``s``), and err on the large side
  (escaping, ``repr`` of odd characters). The output limit alone could not do this: ``{{
  s.replace("", s)|length }}`` prints a few digits after building a gigabyte;
- **output**: the rendered text may be at most `RenderLimits.max_output_chars` characters.

Values in the context are expected to be JSON-shaped (what Temporal's converter delivers); an
object of any other type counts as 64 characters when printed.

`render_async` runs `render` on a small thread pool so the activity's event loop never blocks, and
stops waiting after the time limit plus a grace period. A Python thread cannot be killed: should
one C-level operation outrun every check above, its thread runs on after the caller gave up; the
real bound is the operation limits, which keep every single operation small.

HTML parts (`is_html_part`, or ``html=True``) render with autoescaping on. Text that becomes part
of a structure (a URL, a JSON body) names its `Interpolation`, which encodes every ``{{ value }}``
so a value cannot change the structure around it. An email's HTML part
renders through `render_html`: autoescaped, then its ``<style>`` rules are inlined into ``style``
attributes with ``css-inline`` (mail clients such as Gmail drop or limit ``<style>`` blocks), with
no stylesheet fetched from the network and links left as written.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import quote

import css_inline
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup

from core.errors import EventflowError

T = TypeVar("T")

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
    #: Characters (or list items) all the strings and lists one render builds may add up to.
    max_allocated_chars: int = 1_000_000
    #: How long `render_async` waits beyond the time limit for the thread to notice it.
    grace_seconds: float = 1.0


DEFAULT_LIMITS = RenderLimits()


class Interpolation(enum.StrEnum):
    """How each ``{{ value }}`` is written into the rendered text (the template's own text is kept)."""

    #: As it is (an HTML part escapes it for HTML instead).
    TEXT = "text"
    #: Percent-encoded as one URL path segment: everything but letters, digits, ``-``, ``_`` and ``~``,
    #: so ``/``, ``.``, ``?``, ``#`` and ``%`` cannot add segments, climb with ``..``, start a query or
    #: smuggle an encoding. ``|urlencode`` gives the same for a string (so it is not encoded twice).
    URL_SEGMENT = "url_segment"
    #: Escaped as the inside of a JSON string (quotes, backslashes, control characters).
    JSON_STRING = "json_string"
    #: Replaced by ``0`` (punctuation only, like ``,``, is kept): the shape of a JSON body template
    #: with the values taken out.
    PLACEHOLDER = "placeholder"


class _Encoded(str):
    """Text an ``|urlencode`` in a URL already encoded: written as it is."""

    __slots__ = ()


def url_segment(value: object) -> str:
    """``value`` percent-encoded as one path segment (``.`` too: RFC 3986 leaves it, but ``..`` climbs)."""
    return quote(str(value), safe="").replace(".", "%2E")


class _LimitExceeded(Exception):
    """Raised inside template code when an operation or the deadline goes past a limit."""

    def __init__(self, problem: str, reason: RenderFailure = RenderFailure.LIMIT) -> None:
        super().__init__(problem)
        self.reason = reason


_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?")
#: One ``%`` conversion, with its width and precision (``%%`` included, it builds one character).
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?[hlL]?([diouxXeEfFgGcrsa%])")
_BRACE_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)[^{}]*\}")
_NESTED_FIELD = re.compile(r"\{[^{}]*:[^{}]*\{")
_DIGITS = re.compile(r"\d+")
_JSON_PUNCTUATION = re.compile(r"[\s,:\[\]{}]*")
#: String methods and filters whose number arguments are widths (of the result they build).
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH_FILTERS = ("center", "indent", "format")
_FORMAT_FILTER = DEFAULT_FILTERS["format"]
#: String methods that build nothing (answers about the string), so they cost no budget.
_READING_METHODS = frozenset({"startswith", "endswith", "find", "rfind", "index", "rindex", "count",
                              "__len__", "__contains__"})
#: String methods whose result is at most as long as the string.
_SHRINKING_METHODS = frozenset({"strip", "lstrip", "rstrip", "removeprefix", "removesuffix", "split", "rsplit",
                                "splitlines", "partition", "rpartition"})
#: Filters that pass along a value they were given (or a number): nothing new to pay for.
_PASSING_FILTERS = frozenset({"default", "d", "first", "last", "random", "attr", "max", "min", "length", "count",
                              "wordcount", "int", "float", "abs", "round", "sum", "bool", "filesizeformat"})
#: Filters that read a list or mapping as such; every other filter first turns its value into a string.
_CONTAINER_FILTERS = _PASSING_FILTERS | {"join", "list", "map", "select", "reject", "selectattr", "rejectattr",
                                         "sort", "unique", "groupby", "dictsort", "items", "batch", "slice",
                                         "reverse", "tojson", "pprint", "xmlattr", "urlencode", "string"}
#: What an object of an unexpected type is assumed to print as (the context is JSON-shaped).
_OTHER_OBJECT_CHARS = 64
#: Characters the HTML escape of ``& < > ' "`` adds to each (``&#34;`` is 5 for 1).
_HTML_GROWTH = 4


class _Form(enum.Enum):
    """How a value is about to be printed, which decides how long the text gets."""

    TEXT = "str"
    HTML = "escaped str"
    JSON = "json"


def _html_specials(text: str) -> int:
    return sum(text.count(c) for c in "&<>'\"")


def _text_size(text: str, form: _Form, nested: bool) -> int:
    """Characters ``text`` prints as: itself, or its ``repr`` inside a list or mapping; escaped for HTML."""
    if form is _Form.JSON:
        if text.isascii() and text.isprintable():
            return len(text) + 2 + 5 * sum(text.count(c) for c in "<>&'") + text.count('"') + text.count("\\")
        return 12 * len(text) + 2  # \\uXXXX, twice for a character beyond the BMP
    if isinstance(text, Markup):
        return len(text) + (10 if nested else 0)  # Markup('...')
    if not nested:
        size = len(text)
    elif text.isprintable():
        size = len(text) + 2 + text.count("\\") + text.count("'")
    else:
        size = 10 * len(text) + 2  # repr's \\U0001f600
    if form is _Form.HTML:
        size += _HTML_GROWTH * (_html_specials(text) + (2 if nested else 0))
    return size


def _estimate(value: Any, form: _Form, limit: int) -> int:
    """The characters ``value`` prints as in ``form``, over-estimated; stops counting once past ``limit``.

    Nested values are walked without recursion; a list or mapping seen before counts once (repr
    prints a cycle as ``[...]``).
    """
    total = 0
    pending: list[tuple[Any, bool]] = [(value, False)]
    seen: set[int] = set()
    while pending and total <= limit:
        item, nested = pending.pop()
        if isinstance(item, str):
            total += _text_size(item, form, nested)
        elif item is None or isinstance(item, bool):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # log10(2) < 1/3
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Undefined):
            continue
        elif isinstance(item, (list, tuple, set, frozenset, dict, Namespace)):
            if id(item) in seen:
                total += 5
                continue
            seen.add(id(item))
            members: Iterable[Any]
            if isinstance(item, Namespace):
                members = vars(item).get("_Namespace__attrs", {}).values()
                total += 14
            elif isinstance(item, dict):
                members = itertools.chain(item.keys(), item.values())
                total += 2 + 4 * len(item)
            else:
                members = item
                total += 2 + 2 * len(item)
            if total <= limit:
                pending.extend((member, True) for member in members)
        else:
            total += _OTHER_OBJECT_CHARS
    return total


def _shallow(value: Any) -> int:
    """What a result that already exists cost: its characters, or its items (references)."""
    if isinstance(value, (str, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


class _Budget:
    """What one render may still build, in characters (or list items)."""

    def __init__(self, chars: int) -> None:
        self.total = chars
        self.remaining = chars

    def take(self, chars: int, what: str) -> None:
        if chars > self.remaining:
            raise _LimitExceeded(f"{what} would build {chars} characters; a template may build at most "
                                 f"{self.total} in all (RenderLimits.max_allocated_chars)")
        self.remaining -= chars


#: The budget of the render running on this thread (`render` sets it; the environment is shared).
_BUDGET: ContextVar[_Budget | None] = ContextVar("render_budget", default=None)


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` into a call the environment can size, as the sandbox does for ``*`` and ``%``."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's visitor name
        self.write("environment.bounded_concat(context, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


#: How much larger than the output limit inlining may make a message, estimated before it runs.
_INLINE_GROWTH = 20


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox with size checks on every operator, call and filter that can build large values."""

    intercepted_binops = frozenset({"**", "*", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, limits: RenderLimits, *, autoescape: bool,
                 interpolation: Interpolation = Interpolation.TEXT) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False,
                         finalize=self._finalize)
        self.limits = limits
        self.html = autoescape
        self.interpolation = interpolation
        self.globals["range"] = self._range
        # lorem ipsum of any length is one call away; no notification needs it.
        del self.globals["lipsum"]
        if interpolation is Interpolation.URL_SEGMENT:
            self.filters["urlencode"] = self._urlencode_segment(self.filters["urlencode"])
        for name, function in list(self.filters.items()):
            self.filters[name] = self._bounded_filter(name, function)

    # --- the sandbox's hooks ------------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            self._check_power(left, right)
            return left ** right
        if operator == "*":
            self._check_product(left, right)
            return left * right
        if operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                self._take(self._size(left) + self._size(right), "+")
            return left + right
        if isinstance(left, str):
            self._check_format(left, right)
            self._take(self._percent_size(left, right), "%")
        return left % right

    def bounded_concat(self, context: Context, parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ c``: sized before the parts are turned into strings and joined."""
        escaped = context.eval_ctx.autoescape
        self._take(sum(self._size(part, _Form.HTML if escaped else _Form.TEXT) for part in parts), "~")
        return markup_join(parts) if escaped else str_join(parts)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        # The sandbox hands out ``str.format`` wrapped (at attribute access); the wrapper keeps the method.
        method = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                __self._check_widths(args, kwargs)
            if name == "join" and args:
                args = (list(args[0]), *args[1:])  # sized before joining, so a generator runs once, here
            __self._take(__self._str_method_size(owner, name, args, kwargs), f"str.{name}")
            return super().call(__context, __obj, *args, **kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        # Anything else (list.append, dict(), a macro) is paid for after: its arguments may now be
        # held by a list or mapping, and its result is new.
        __self._take(_shallow(result) + sum(_shallow(a) for a in (*args, *kwargs.values())), name or "call")
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, slice) and isinstance(obj, (str, list, tuple)):
            self._take(len(range(*argument.indices(len(obj)))), "slice")
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            self._check_format_spec(owner)
        return super().wrap_str_format(value)

    def _finalize(self, value: Any) -> Any:
        # Every ``{{ value }}`` is turned into a string after this: ``{{ [s] * 1000 }}`` would build
        # the whole text before the output limit could see a piece of it.
        interpolation = self.interpolation
        if isinstance(value, _Encoded) and interpolation is Interpolation.URL_SEGMENT:
            return value
        if interpolation is not Interpolation.TEXT:
            # Encoding grows a character to at most 12 (\ud83d\ude00 in JSON; %F0%9F%98%80 in a URL).
            self._take(12 * self._size(value), "output")
            text = str(value)
            if interpolation is Interpolation.URL_SEGMENT:
                return url_segment(text)
            if interpolation is Interpolation.PLACEHOLDER:
                # A template's own punctuation (``{{ "," if not loop.last }}``) is structure, not a
                # value: with no quote, letter or digit it can add neither a key nor a value.
                return text if _JSON_PUNCTUATION.fullmatch(text) else "0"
            return json.dumps(text)[1:-1]
        if isinstance(value, str) and not (self.html and not isinstance(value, Markup)):
            return value  # printed as it is: nothing new is built
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self._take(self._size(value, _Form.HTML if self.html else _Form.TEXT), "output")
        return value

    @staticmethod
    def _urlencode_segment(function: Callable[..., Any]) -> Callable[..., Any]:
        def urlencode(value: Any) -> Any:
            # A string is one path segment (Jinja's own leaves ``/`` and ``.``); a mapping stays a
            # query string, whose keys and values Jinja encodes fully.
            if isinstance(value, str):
                return _Encoded(url_segment(value))
            return _Encoded(function(value))

        return urlencode

    # --- the budget ---------------------------------------------------------------------------

    def _take(self, chars: int, what: str) -> None:
        budget = _BUDGET.get()
        if budget is not None:
            budget.take(chars, what)

    def _remaining(self) -> int:
        budget = _BUDGET.get()
        return budget.remaining if budget is not None else sys.maxsize

    def _size(self, value: Any, form: _Form = _Form.TEXT) -> int:
        return _estimate(value, form, self._remaining())

    def _largest(self, values: Iterable[Any], form: _Form = _Form.TEXT) -> int:
        return max((self._size(value, form) for value in values), default=0)

    def _percent_size(self, text: str, values: Any) -> int:
        """``text % values``: every conversion may print the largest value, at its width at least."""
        if isinstance(values, Mapping):
            arguments: Iterable[Any] = values.values()
        elif isinstance(values, tuple):
            arguments = values
        else:
            arguments = (values,)
        largest = self._largest(arguments, _Form.HTML if isinstance(text, Markup) else _Form.TEXT)
        size = len(text)
        for match in _CONVERSION.finditer(text):
            width, precision, kind = match.groups()
            numbers = [int(n) for n in (width, precision) if n and n != "*"]
            size += 1 if kind == "%" else max([largest, *numbers]) + (2 if kind in "eEfFgG" else 0)
        return size

    def _format_size(self, text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
        """``text.format(...)``: every field may print the largest argument (its repr, for ``!r``)."""
        form = _Form.HTML if isinstance(text, Markup) else _Form.TEXT
        arguments = [*args, *kwargs.values()]
        if args and isinstance(args[0], Mapping) and not kwargs:
            arguments += list(args[0].values())  # format_map
        largest = self._largest(arguments, form)
        size = len(text)
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError:
            return size  # the call itself raises
        for _, field_name, spec, conversion in fields:
            if field_name is not None:
                widths = [int(n) for n in _DIGITS.findall(spec or "")]
                size += max([largest * (10 if conversion in ("r", "a") else 1), *widths])
        return size

    def _str_method_size(self, text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
        form = _Form.HTML if isinstance(text, Markup) else _Form.TEXT
        if name in _READING_METHODS or name.startswith("is"):
            return 0
        if name in _SHRINKING_METHODS:
            return len(text)
        if name == "replace" and len(args) >= 2 and isinstance(args[0], str):
            old, new = args[0], args[1]
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            hits = text.count(old) if old else len(text) + 1
            if isinstance(count, int) and count >= 0:
                hits = min(hits, count)
            return len(text) + hits * max(0, self._size(new, form) - len(old))
        if name == "join" and args:
            items = args[0]
            return sum(self._size(item, form) for item in items) + len(text) * max(0, len(items) - 1)
        if name in ("format", "format_map"):
            return self._format_size(text, args, kwargs)
        if name in ("center", "ljust", "rjust", "zfill"):
            widths = [a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
            return max([len(text), *widths])
        if name == "expandtabs":
            tabsize = next(iter((*args, *kwargs.values())), 8)
            return len(text) + text.count("\t") * max(int(tabsize), 0)
        if name == "translate" and args:
            table = args[0]
            widest = self._largest(table.values()) if isinstance(table, Mapping) else 3
            return len(text) * max(1, widest)
        # Case changes grow a string at most threefold ("ΐ".upper()); encode() to four bytes a character.
        return 4 * len(text) + sum(self._size(a) for a in (*args, *kwargs.values()))

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
                self._take(len(sequence) * max(count, 0), "*")
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

    def _filter_size(self, name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
        """What filter ``name`` would build from ``value``, before it runs (0 when paid for after)."""
        text = self._size(value) if name not in _CONTAINER_FILTERS else 0
        if text > self._remaining():
            return text  # refused before the filters below turn the value into a string to count in
        if name == "reverse":
            return _shallow(value) if isinstance(value, str) else 0
        if name == "replace" and len(args) >= 2:
            old, new = str(args[0]), args[1]
            hits = len(text_of(value)) + 1 if not old else text_of(value).count(old)
            return text + hits * max(0, self._size(new) - len(old))
        if name == "join":
            separator = args[0] if args else kwargs.get("d", "")
            return sum(self._size(item) for item in value) + len(str(separator)) * max(0, len(value) - 1)
        if name == "indent":
            width = args[0] if args else kwargs.get("width", 4)
            prefix = width if isinstance(width, int) and not isinstance(width, bool) else len(str(width))
            return text + (text_of(value).count("\n") + 1) * prefix
        if name == "wordwrap":
            wrapstring = args[2] if len(args) > 2 else kwargs.get("wrapstring") or "\n"
            return text * (1 + len(str(wrapstring)))
        if name == "center":
            width = args[0] if args else kwargs.get("width", 80)
            return max(text, width if isinstance(width, int) else 0)
        if name == "format" and isinstance(value, str):
            return self._percent_size(value, kwargs if kwargs else tuple(args))
        if name == "string":
            return self._size(value)
        if name == "tojson":
            indent = args[0] if args else kwargs.get("indent")
            return self._size(value, _Form.JSON) * (2 + (indent if isinstance(indent, int) else 0))
        if name in ("escape", "e", "forceescape"):
            return self._size(value, _Form.HTML)
        if name in ("urlencode", "urlize"):
            return 12 * self._size(value) + (64 * (text_of(value).count(" ") + 1) if name == "urlize" else 0)
        if name in ("xmlattr", "pprint"):
            return 2 * self._size(value, _Form.HTML)
        return text

    def _bounded_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        passes_argument = hasattr(function, "jinja_pass_arg")  # @pass_context, @pass_environment...

        def bounded(*args: Any, **kwargs: Any) -> Any:
            first = 1 if passes_argument else 0
            value, rest = (args[first], args[first + 1:]) if len(args) > first else (None, ())
            # The first argument is the value filtered; for ``format`` it is the format string, and
            # the other arguments are the values formatted, which may be any size.
            if function is _FORMAT_FILTER:
                if isinstance(value, str):
                    self._check_format(value, ())
            elif name in _WIDTH_FILTERS:
                self._check_widths(rest, kwargs)
            if name == "join" and value is not None and not isinstance(value, (list, tuple, str)):
                value = list(value)  # sized before joining, so a generator runs once, here
                args = (*args[:first], value, *rest)
            self._take(self._filter_size(name, value, rest, kwargs), f"filter {name}")
            result = function(*args, **kwargs)
            if name not in _PASSING_FILTERS and not isinstance(result, str):
                self._take(_shallow(result), f"filter {name}")  # a new list, sized after
            return result

        if passes_argument:  # keeps @pass_context / @pass_environment working
            setattr(bounded, "jinja_pass_arg", getattr(function, "jinja_pass_arg"))  # noqa: B009, B010 - a marker Jinja sets on some filters; typed functions do not declare it
        return bounded


def text_of(value: Any) -> str:
    """``value`` as the filters that take a string see it (already paid for when it is not one)."""
    return value if isinstance(value, str) else str(value)


@lru_cache(maxsize=8)
def _environment(limits: RenderLimits, autoescape: bool, interpolation: Interpolation) -> _BoundedEnvironment:
    return _BoundedEnvironment(limits, autoescape=autoescape, interpolation=interpolation)


@lru_cache(maxsize=512)
def _compile(limits: RenderLimits, html: bool, interpolation: Interpolation, source: str) -> Template:
    # Compiling costs far more than rendering, and a journey sends the same few sources over and over.
    return _environment(limits, html, interpolation).from_string(source)


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
           limits: RenderLimits = DEFAULT_LIMITS, interpolation: Interpolation = Interpolation.TEXT) -> str:
    """Renders ``source`` with ``context`` within ``limits``; raises `TemplateRenderError` on any failure.

    Blocking: call it from a thread (or use `render_async`), never on an event loop.
    """
    if len(source) > limits.max_source_chars:
        raise TemplateRenderError(template_id, f"source is longer than {limits.max_source_chars} characters",
                                  RenderFailure.LIMIT)
    previous = sys.gettrace()
    budget = _BUDGET.set(_Budget(limits.max_allocated_chars))
    try:
        template = _compile(limits, html, interpolation, source)
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
        _BUDGET.reset(budget)


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
                       limits: RenderLimits = DEFAULT_LIMITS, interpolation: Interpolation = Interpolation.TEXT
                       ) -> str:
    """`render` off the event loop; raises `TemplateRenderError` on any failure, including a timeout."""
    return await _off_loop(template_id, lambda: render(template_id, source, context, html=html, limits=limits,
                                                       interpolation=interpolation), limits)


async def render_html_async(template_id: str, source: str, context: Mapping[str, Any], *,
                            limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """`render_html` off the event loop; raises `TemplateRenderError` on any failure, including a timeout."""
    return await _off_loop(template_id, lambda: render_html(template_id, source, context, limits=limits), limits)


@dataclass(frozen=True)
class RenderPart:
    """One text of a message to render: its source, and whether it is an email's HTML part."""

    source: str
    html: bool = False


async def render_parts_async(template_id: str, parts: Sequence[RenderPart], context: Mapping[str, Any], *,
                             limits: RenderLimits = DEFAULT_LIMITS) -> list[str]:
    """Every part rendered in one trip off the event loop (`render`, or `render_html` for an HTML part).

    A message has several parts; each trip costs thread hand-offs that a busy worker pays in latency,
    so they travel together. Each part keeps its own limits; the wait grows with their number.
    Raises `TemplateRenderError` for the first part that fails.
    """
    def render_all() -> list[str]:
        return [render_html(template_id, part.source, context, limits=limits) if part.html
                else render(template_id, part.source, context, limits=limits) for part in parts]

    if not parts:
        return []
    return await _off_loop(template_id, render_all, limits, parts=len(parts))


async def _off_loop(template_id: str, call: Callable[[], T], limits: RenderLimits, *, parts: int = 1) -> T:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_render_pool(), call)
    try:
        return await asyncio.wait_for(future, timeout=parts * limits.time_limit_seconds + limits.grace_seconds)
    except TimeoutError as exc:
        raise TemplateRenderError(template_id, f"rendering took longer than {limits.time_limit_seconds:g}s"
                                               + (f" per part ({parts} parts)" if parts > 1 else ""),
                                  RenderFailure.TIMEOUT) from exc
