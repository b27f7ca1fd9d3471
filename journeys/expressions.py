"""The journey expression language: a tiny, safe language for filters and branch conditions.

Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand)?
    operand    := NUMBER | STRING | "true" | "false" | "null" | PATH | "[" literal ("," literal)* "]" | "(" expr ")"
    PATH       := NAME ("." NAME)*        e.g. payload.total.amount, customer.locale

Nothing is ever handed to Python's ``eval``: the text is tokenised and parsed into a small tree
that `evaluate` walks. Paths only read keys of plain mappings (never attributes), names starting
with ``_`` are rejected, and the length and nesting depth of an expression are bounded.

Evaluation is total: it never raises. Whatever the data (a mapping where a string was expected,
an unhashable value on the left of ``in``, a NaN, a number too large for a decimal), the whole
expression is false and the failure is counted (``eventflow_expression_errors_total`` by journey
and step) through an `ErrorHook`. The validator rejects what the event schemas already show to be
mistyped (`type_problems`), so a counted error means the data did not look like its schema.

Semantics: a path that does not exist is ``null``. Ordering comparisons (``<`` etc.) compare
numerically when both sides are numbers or decimal strings (money amounts arrive as ``"49.90"``),
otherwise as strings when both are strings, otherwise they are false. ``==`` compares numerically
when one side is a number literal and the other a number or decimal string; otherwise values
must be equal as they are.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from core.errors import EventflowError

MAX_LENGTH = 1000
MAX_DEPTH = 32
#: Items in one list literal, and how deeply list literals may nest.
MAX_LIST_ITEMS = 100
MAX_LIST_DEPTH = 2

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
""", re.VERBOSE)
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"})
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


class ExpressionError(EventflowError):
    """An expression does not parse; ``position`` is the character offset of the problem."""

    def __init__(self, expression: str, problem: str, position: int | None = None) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"expression {expression!r}: {problem}{where}")
        self.expression = expression
        self.problem = problem
        self.position = position


@dataclass(frozen=True)
class Literal:
    """A constant: number (Decimal), string, boolean, null or a list of those."""

    value: Any


@dataclass(frozen=True)
class Path:
    """A dotted path into the evaluation context."""

    parts: tuple[str, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


Node: TypeAlias = "Literal | Path | Not | BoolOp | Compare"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise ExpressionError(source, f"unexpected character {source[position]!r}", position)
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "name":
            if any(part.startswith("_") for part in text.split(".")):
                raise ExpressionError(source, f"names may not start with '_': {text!r}", position)
            if text in _KEYWORDS:
                kind = "keyword"
        if kind != "ws":
            tokens.append(_Token(kind, text, position))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self._source = source
        self._tokens = _tokenize(source)
        self._index = 0
        self._depth = 0
        self._list_depth = 0

    def parse(self) -> Node:
        if not self._tokens:
            raise ExpressionError(self._source, "is empty")
        node = self._or()
        if self._index < len(self._tokens):
            token = self._tokens[self._index]
            raise ExpressionError(self._source, f"unexpected {token.text!r}", token.position)
        return node

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if token is not None and token.text == text and token.kind in ("keyword", "op"):
            self._index += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        if not self._accept(text):
            token = self._peek()
            found = repr(token.text) if token else "the end"
            raise ExpressionError(self._source, f"expected {text!r} but found {found}",
                                  token.position if token else len(self._source))

    def _nested(self, position: int) -> None:
        """Enters one level of nesting; the caller leaves it with ``self._depth -= 1``."""
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ExpressionError(self._source, f"nested deeper than {MAX_DEPTH}", position)

    def _or(self) -> Node:
        operands = [self._and()]
        while self._accept("or"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def _and(self) -> Node:
        operands = [self._not()]
        while self._accept("and"):
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def _not(self) -> Node:
        token = self._peek()
        if token is not None and self._accept("not"):
            self._nested(token.position)
            node = Not(self._not())
            self._depth -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._operand()
        token = self._peek()
        if token is None:
            return left
        if token.kind == "op" and token.text in _COMPARISONS:
            self._index += 1
            return Compare(token.text, left, self._operand())
        if token.text == "in" and token.kind == "keyword":
            self._index += 1
            return Compare("in", left, self._operand())
        if token.text == "not" and token.kind == "keyword":
            following = self._tokens[self._index + 1] if self._index + 1 < len(self._tokens) else None
            if following is not None and following.text == "in":
                self._index += 2
                return Compare("not in", left, self._operand())
        return left

    def _operand(self) -> Node:
        token = self._peek()
        if token is None:
            raise ExpressionError(self._source, "ends where a value was expected", len(self._source))
        self._index += 1
        if token.kind == "number":
            return Literal(Decimal(token.text))
        if token.kind == "string":
            return Literal(_unquote(token.text))
        if token.kind == "name":
            return Path(tuple(token.text.split(".")))
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[token.text])
        if token.text == "(":
            self._nested(token.position)
            node = self._or()
            self._expect(")")
            self._depth -= 1
            return node
        if token.text == "[":
            return self._list(token)
        raise ExpressionError(self._source, f"unexpected {token.text!r}", token.position)


    def _list(self, opening: _Token) -> Literal:
        self._list_depth += 1
        if self._list_depth > MAX_LIST_DEPTH:
            raise ExpressionError(self._source, f"lists nested deeper than {MAX_LIST_DEPTH}", opening.position)
        self._nested(opening.position)
        items: list[Any] = []
        if not self._accept("]"):
            while True:
                item = self._operand()
                if not isinstance(item, Literal):
                    raise ExpressionError(self._source, "list items must be literals", opening.position)
                items.append(item.value)
                if len(items) > MAX_LIST_ITEMS:
                    raise ExpressionError(self._source, f"a list has more than {MAX_LIST_ITEMS} items",
                                          opening.position)
                if self._accept("]"):
                    break
                self._expect(",")
        self._depth -= 1
        self._list_depth -= 1
        return Literal(tuple(items))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(source: str) -> Node:
    """Parses ``source``; raises `ExpressionError` naming the problem and its position."""
    if not isinstance(source, str):
        raise ExpressionError(str(source), "must be a string")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(source[:40] + "...", f"is longer than {MAX_LENGTH} characters")
    return _Parser(source).parse()


def paths(node: Node) -> list[tuple[str, ...]]:
    """Every path the expression reads, for validation against the context's shape."""
    if isinstance(node, Path):
        return [node.parts]
    if isinstance(node, Not):
        return paths(node.operand)
    if isinstance(node, BoolOp):
        return [p for operand in node.operands for p in paths(operand)]
    if isinstance(node, Compare):
        return paths(node.left) + paths(node.right)
    return []


def _lookup(context: Mapping[str, Any], parts: Sequence[str]) -> Any:
    value: Any = context
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str) and _DECIMAL.match(value):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if _is_number(left) or _is_number(right):
        a, b = _number(left), _number(right)
        if a is not None and b is not None:
            return a == b
    return bool(left == right)


def _order(op: str, left: Any, right: Any) -> bool:
    a: Any = _number(left)
    b: Any = _number(right)
    if a is None or b is None:
        if isinstance(left, str) and isinstance(right, str):
            a, b = left, right
        else:
            return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, (list, tuple)):
        return any(_equal(item, candidate) for candidate in container)
    if isinstance(container, Mapping):
        # An unhashable item raises TypeError here; `evaluate` turns that into false and counts it.
        return item in container
    return False


def _value(node: Node, context: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Path):
        return _lookup(context, node.parts)
    return _evaluate(node, context)


def _evaluate(node: Node, context: Mapping[str, Any]) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_evaluate(operand, context) for operand in node.operands)
        return any(_evaluate(operand, context) for operand in node.operands)
    if isinstance(node, Not):
        return not _evaluate(node.operand, context)
    if isinstance(node, Compare):
        left, right = _value(node.left, context), _value(node.right, context)
        if node.op == "==":
            return _equal(left, right)
        if node.op == "!=":
            return not _equal(left, right)
        if node.op == "in":
            return _contains(right, left)
        if node.op == "not in":
            return not _contains(right, left)
        return _order(node.op, left, right)
    return _truthy(_value(node, context))


#: Called with the journey id, the step id (``trigger`` for a journey's filter) and the error when
#: an expression could not be evaluated over the data it was given.
ErrorHook: TypeAlias = Callable[[str, str, Exception], None]


class ExpressionMetrics:
    """Counts evaluations that failed on their data and so were false; an `ErrorHook`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.errors = Counter("eventflow_expression_errors_total",
                              "Journey expressions that could not be evaluated over an event and were false.",
                              ["journey", "step"], registry=registry)

    def __call__(self, journey: str, step: str, error: Exception) -> None:
        self.errors.labels(journey=journey, step=step).inc()
        # The error names types only, never the values it failed on (they may be contact data).
        _log.warning("expression_error journey=%s step=%s error_type=%s", journey, step, type(error).__name__)


_log = logging.getLogger(__name__)
_default_metrics: ExpressionMetrics | None = None


def default_metrics() -> ExpressionMetrics:
    """The hook used when none is given: counts in the process-wide default registry (built on first use)."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = ExpressionMetrics(REGISTRY)
    return _default_metrics


def evaluate(node: Node, context: Mapping[str, Any], *, journey: str = "", step: str = "",
             on_error: ErrorHook | None = None) -> bool:
    """Evaluates a parsed expression to a boolean; never raises.

    When the data makes evaluation fail (an unhashable value in ``in``, a NaN in an ordering, ...)
    the whole expression is false -- not just the failing comparison, so ``not`` cannot turn a
    failure into a match -- and ``on_error`` (default: `default_metrics`) is told.
    """
    try:
        return _evaluate(node, context)
    except Exception as error:  # noqa: BLE001 - totality is the contract: any failure is false, and counted
        try:
            (on_error or default_metrics())(journey, step, error)
        except Exception:  # noqa: BLE001 - a failing hook must not make evaluation raise either
            _log.exception("expression_error_hook_failed journey=%s step=%s", journey, step)
        return False


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if _is_number(value):
        return bool(value)
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value) > 0
    return bool(value is True)


def matches(source: str, context: Mapping[str, Any], *, journey: str = "", step: str = "",
            on_error: ErrorHook | None = None) -> bool:
    """Parses and evaluates ``source`` against ``context`` in one call; raises only if it does not parse."""
    return evaluate(parse(source), context, journey=journey, step=step, on_error=on_error)


# --- static type checks ----------------------------------------------------------------------


class ValueKind(enum.StrEnum):
    """What the event schema says a value is, as far as an expression can tell."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    NULL = "null"
    LIST = "list"
    MAPPING = "record"


def kind_of_value(value: Any) -> ValueKind | None:
    """The kind of a (sample) value; None when it cannot be told."""
    if value is None:
        return ValueKind.NULL
    if isinstance(value, bool):
        return ValueKind.BOOLEAN
    if _is_number(value):
        return ValueKind.NUMBER
    if isinstance(value, str):
        return ValueKind.STRING
    if isinstance(value, (list, tuple)):
        return ValueKind.LIST
    if isinstance(value, Mapping):
        return ValueKind.MAPPING
    return None


#: The kind of the value at a path, or None when the schema does not say (unknown or nullable).
KindOf: TypeAlias = Callable[[tuple[str, ...]], "ValueKind | None"]
_UNORDERED = frozenset({ValueKind.LIST, ValueKind.MAPPING, ValueKind.BOOLEAN, ValueKind.NULL})
_COLLECTIONS = frozenset({ValueKind.LIST, ValueKind.MAPPING})


def _describe(node: Node) -> str:
    if isinstance(node, Path):
        return ".".join(node.parts)
    if isinstance(node, Literal):
        return "null" if node.value is None else repr(node.value) if not isinstance(node.value, Decimal) \
            else str(node.value)
    return "a condition"


def type_problems(node: Node, kind_of: KindOf) -> list[str]:
    """Comparisons the schema shows can never work (and would only ever be false at run time).

    ``kind_of`` gives the kind of a path's value from the event schema; a comparison is checked
    only where both sides' kinds are known.
    """
    def kind(operand: Node) -> ValueKind | None:
        if isinstance(operand, Literal):
            return kind_of_value(operand.value)
        if isinstance(operand, Path):
            return kind_of(operand.parts)
        return ValueKind.BOOLEAN

    if isinstance(node, (Not,)):
        return type_problems(node.operand, kind_of)
    if isinstance(node, BoolOp):
        return [p for operand in node.operands for p in type_problems(operand, kind_of)]
    if not isinstance(node, Compare):
        return []
    found = type_problems(node.left, kind_of) + type_problems(node.right, kind_of)
    left, right = kind(node.left), kind(node.right)
    lname, rname = _describe(node.left), _describe(node.right)
    if node.op in ("in", "not in"):
        if right in (ValueKind.NUMBER, ValueKind.BOOLEAN, ValueKind.NULL):
            found.append(f"{node.op!r} needs a list, a string or a record on its right, but {rname} is "
                         f"{'null' if right is ValueKind.NULL else 'a ' + right}")
        elif right in (ValueKind.MAPPING, ValueKind.STRING) and left is not None and left is not ValueKind.STRING:
            what = "its field names" if right is ValueKind.MAPPING else "substrings"
            found.append(f"{node.op!r} over {rname} (a {right}) looks for {what}, which are strings, "
                         f"but {lname} is a {left}")
    elif node.op in ("<", "<=", ">", ">="):
        for name, side in ((lname, left), (rname, right)):
            if side in _UNORDERED:
                found.append(f"{node.op!r} compares numbers or strings, but {name} is a {side}")
    elif left is not None and right is not None and left != right and (left in _COLLECTIONS or right in _COLLECTIONS) \
            and ValueKind.NULL not in (left, right):
        found.append(f"{lname} (a {left}) and {rname} (a {right}) are never equal")
    return found
