"""The step tree of a journey as typed data: one frozen class per step kind, and its control flow.

Steps nest: ``branch`` cases, ``wait_for`` outcomes and ``split`` variants each hold a tuple of
steps (an *arm*). When an arm ends, the journey continues with the step after the one that owns
the arm. There are no loops or gotos, so every step runs at most once per instance and its id
names its send (idempotency key) and its position (for continue-as-new and the status query).

The document form (YAML, and a snapshot's ``steps``) maps one-to-one onto these classes: a step
is ``{"id": ..., <kind>: {<option>: ...}}`` and each option is a field of the kind's class under
the same name (``else`` is `BranchStep.otherwise`). `decode_step` and `encode_step` are generic
over the fields, so a new option is one field with a default here plus its entry in
``journey.schema.json``; tests/journeys/test_steps.py checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from activities.caps import Priority
from activities.outcomes import DeliveryOutcome


class StepKind(enum.StrEnum):
    """The kinds of step, as their key in the document."""

    SEND = "send"
    DELAY = "delay"
    BRANCH = "branch"
    WAIT_FOR = "wait_for"
    SPLIT = "split"
    DIGEST = "digest"
    EXIT = "exit"
    WEBHOOK = "webhook"


STEP_KINDS = tuple(kind.value for kind in StepKind)


class OnCap(enum.StrEnum):
    """What a send does when the customer's daily cap for the channel is reached."""

    SKIP = "skip"
    DEFER = "defer"


@dataclass(frozen=True)
class QuietHours:
    """A send's own quiet hours: ``window`` is ``HH:MM-HH:MM`` in the customer's zone, or empty for none.

    A send without a `QuietHours` follows the worker's default; ``QuietHours("")`` (``false`` in
    the document) is a transactional send that ignores quiet hours altogether.
    """

    window: str

    @property
    def ignored(self) -> bool:
        return not self.window

    @classmethod
    def from_document(cls, value: object) -> QuietHours:
        return cls("" if value is False else str(value))

    def to_document(self) -> str | bool:
        return self.window or False


@dataclass(frozen=True)
class SendOptions:
    """How to send: channel, template, the fallback channel and the delivery policy options.

    ``priority`` and ``caps`` start as the journey's (the loader copies them into each send that
    does not set its own; a step's caps override the journey's per scope and window).
    """

    channel: str
    template: str
    fallback: str | None = None
    quiet_hours: QuietHours | None = None
    daily_cap: int | None = None
    on_cap: OnCap = OnCap.SKIP
    priority: Priority | None = None
    #: Rolling caps overriding the worker's per scope and window (`activities.caps.CapSet` text).
    caps: str | None = None
    #: How long the send waits for the provider's delivery report; a bounce or undelivered report
    #: in that time sends the ``fallback`` channel (None: fall back on immediate failures only).
    fallback_within: str | None = None
    #: The subscription topic (journeys/topics.yaml); the customer's consent to it on the channel
    #: decides the send. None: the channel-wide opt-out alone, as before topics existed.
    topic: str | None = None


@dataclass(frozen=True)
class SendStep:
    """Send one notification."""

    KIND: ClassVar[StepKind] = StepKind.SEND
    id: str
    send: SendOptions


@dataclass(frozen=True)
class DelayStep:
    """Wait a ``duration``; or until a local time of day (``after`` a minimum); or until a timestamp ± ``offset``."""

    KIND: ClassVar[StepKind] = StepKind.DELAY
    id: str
    duration: str | None = None
    until_local_time: str | None = None
    after: str | None = None
    until: str | None = None
    offset: str | None = None


@dataclass(frozen=True)
class BranchCase:
    """One ``branch`` case: the steps to run when ``when`` holds over the journey's context."""

    when: str
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class BranchStep:
    """Run the first case whose condition holds, else the ``else`` arm."""

    KIND: ClassVar[StepKind] = StepKind.BRANCH
    id: str
    cases: tuple[BranchCase, ...] = ()
    otherwise: tuple[Step, ...] = field(default=(), metadata={"key": "else"})


@dataclass(frozen=True)
class WaitForStep:
    """Wait for a matching event (``key`` resolved by the loader) up to ``timeout``; then one of two arms.

    With ``send`` and ``outcome`` instead of ``event``, waits for a delivery report on that send
    step (`journeys.goals.WAITABLE_OUTCOMES`); reports that arrived before the wait count.
    """

    KIND: ClassVar[StepKind] = StepKind.WAIT_FOR
    id: str
    # Defaults only so that delivery waits can leave ``event`` out; the schema requires a timeout.
    event: str = ""
    timeout: str = ""
    key: str | None = None
    when: str | None = None
    received: tuple[Step, ...] = ()
    timed_out: tuple[Step, ...] = ()
    send: str | None = None
    outcome: DeliveryOutcome | None = None


@dataclass(frozen=True)
class SplitVariant:
    """One arm of a ``split``: the share of customers (``percent``) that take it."""

    name: str
    percent: int
    steps: tuple[Step, ...] = ()
    #: A control arm: its customers receive nothing in this split (its steps must be empty).
    control: bool = False


@dataclass(frozen=True)
class SplitStep:
    """Split customers between variants by a stable hash."""

    KIND: ClassVar[StepKind] = StepKind.SPLIT
    id: str
    variants: tuple[SplitVariant, ...] = ()


@dataclass(frozen=True)
class DigestStep:
    """Collect matching events over ``window``, then send one notification about them."""

    KIND: ClassVar[StepKind] = StepKind.DIGEST
    id: str
    event: str
    window: str
    send: SendOptions
    key: str | None = None
    when: str | None = None
    min_events: int = 1


@dataclass(frozen=True)
class ExitStep:
    """End the journey here."""

    KIND: ClassVar[StepKind] = StepKind.EXIT
    id: str
    reason: str | None = None


class WebhookMethod(enum.StrEnum):
    """The HTTP methods a ``webhook`` step may use."""

    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class OnWebhookFailure(enum.StrEnum):
    """What the journey does after a webhook failed for good: go on without its response, or exit."""

    CONTINUE = "continue"
    EXIT = "exit"


@dataclass(frozen=True)
class SecretHeader:
    """A request header whose value is the Secret ``secret`` (resolved in the worker, never in the definition)."""

    name: str
    secret: str


@dataclass(frozen=True)
class WebhookRetry:
    """The retry policy of a webhook call (4xx other than 408/429 are never retried)."""

    max_attempts: int = 5
    initial_interval: str = "1s"
    max_interval: str = "1m"


#: A webhook step's body: JSON data with template leaves, or one template string.
WebhookBody: TypeAlias = str | dict[str, Any] | list[Any]


@dataclass(frozen=True)
class WebhookStep:
    """Call another system over HTTP; its JSON response is ``webhooks.<save_as>`` for later steps."""

    KIND: ClassVar[StepKind] = StepKind.WEBHOOK
    id: str
    url: str
    method: WebhookMethod = WebhookMethod.POST
    headers: tuple[SecretHeader, ...] = ()
    #: A mapping (or list) whose string leaves are templates, sent as JSON; or, the older form, one
    #: JSON template string (its values are JSON-escaped and may not change its keys).
    body: WebhookBody | None = None
    timeout: str = "10s"
    retry: WebhookRetry | None = None
    max_response_bytes: int = 65536
    save_as: str | None = None
    on_failure: OnWebhookFailure = OnWebhookFailure.CONTINUE


Step: TypeAlias = SendStep | DelayStep | BranchStep | WaitForStep | SplitStep | DigestStep | ExitStep | WebhookStep
STEP_CLASSES: dict[StepKind, type[Any]] = {cls.KIND: cls for cls in (
    SendStep, DelayStep, BranchStep, WaitForStep, SplitStep, DigestStep, ExitStep, WebhookStep)}
#: Mapping keys and list indexes from a definition's root to a value.
StepPath = tuple[str | int, ...]


# --- document form -----------------------------------------------------------------------------


def document_key(item: dataclasses.Field[Any]) -> str:
    """The option's key in the document (the field name unless renamed, like ``else``)."""
    return str(item.metadata.get("key", item.name))


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _decode(hint: Any, raw: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is QuietHours:
        return QuietHours.from_document(raw)
    if hint == Step:
        return decode_step(raw)
    if origin in (typing.Union, types.UnionType):
        if raw is None:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:
            return raw  # several shapes (a webhook body): the schema has checked which one this is
        return _decode(inner[0], raw)
    if origin is tuple:
        return tuple(_decode(args[0], value) for value in raw or ())
    if dataclasses.is_dataclass(hint):
        return _record(typing.cast(type[Any], hint), raw)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(raw)
    if hint is int:
        return int(raw)
    if hint is str:
        return str(raw)
    return raw


def _record(cls: type[Any], body: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    values = {f.name: _decode(hints[f.name], body[document_key(f)])
              for f in dataclasses.fields(cls) if document_key(f) in body}
    return cls(**values)


def decode_step(raw: Mapping[str, Any]) -> Step:
    """The typed step of one document step (``{"id": ..., <kind>: {...}}``); ValueError if it has no kind."""
    kind = StepKind(_kind_of(raw))
    cls = STEP_CLASSES[kind]
    body = raw.get(kind.value) or {}
    if kind is StepKind.SEND:
        step: Step = SendStep(id=str(raw["id"]), send=_record(SendOptions, body))
        return step
    decoded: Step = _record(cls, {**body, "id": raw["id"]})
    return decoded


def decode_steps(raw: Sequence[Mapping[str, Any]]) -> tuple[Step, ...]:
    """Every step of a document's step list, typed."""
    return tuple(decode_step(step) for step in raw)


def _encode(value: Any) -> Any:
    if isinstance(value, QuietHours):
        return value.to_document()
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple(STEP_CLASSES.values())):
        return encode_step(typing.cast(Step, value))  # STEP_CLASSES holds exactly the Step union's classes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_record(value)
    return value


def _encode_record(value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for item in dataclasses.fields(value):
        current = getattr(value, item.name)
        if item.default is not dataclasses.MISSING and current == item.default:
            continue
        body[document_key(item)] = _encode(current)
    return body


def encode_step(step: Step) -> dict[str, Any]:
    """The document form of ``step``: options at their defaults are left out."""
    if isinstance(step, SendStep):
        return {"id": step.id, "send": _encode_record(step.send)}
    body = _encode_record(step)
    body.pop("id")
    return {"id": step.id, step.KIND.value: body}


# --- walking the tree ------------------------------------------------------------------------


def _kind_of(step: Mapping[str, Any]) -> str:
    """The kind of a document step: the one key of `STEP_KINDS` it carries (only decoding reads documents)."""
    for kind in STEP_KINDS:
        if kind in step:
            return kind
    raise ValueError(f"step {step.get('id')!r} has none of {', '.join(STEP_KINDS)}")


def arms(step: Step) -> list[tuple[str, tuple[Step, ...], StepPath]]:
    """The nested step lists of ``step``: (arm name, steps, document path relative to the step)."""
    match step:
        case BranchStep(cases=cases, otherwise=otherwise):
            found = [(f"case {index + 1}", case.steps, ("branch", "cases", index, "steps"))
                     for index, case in enumerate(cases)]
            return [*found, ("else", otherwise, ("branch", "else"))]
        case WaitForStep(received=received, timed_out=timed_out):
            return [("received", received, ("wait_for", "received")),
                    ("timed_out", timed_out, ("wait_for", "timed_out"))]
        case SplitStep(variants=variants):
            return [(variant.name, variant.steps, ("split", "variants", index, "steps"))
                    for index, variant in enumerate(variants)]
        case _:
            return []


def walk(steps: Sequence[Step], path: StepPath = ("steps",)) -> Iterator[tuple[Step, StepPath]]:
    """Every step of the tree, depth first in document order, with its document path from the root.

    The path is where the step is in its definition document, so checks over typed steps report
    ``file:line`` (`journeys.problems.Report.add`) without reading the document.
    """
    for index, step in enumerate(steps):
        here = (*path, index)
        yield step, here
        for _, nested, relative in arms(step):
            yield from walk(nested, (*here, *relative))


def options_path(step: SendStep | DigestStep, path: StepPath) -> StepPath:
    """The document path of a sending step's options, given the step's own path."""
    return (*path, "send") if isinstance(step, SendStep) else (*path, "digest", "send")


def sending(steps: Sequence[Step]) -> Iterator[tuple[SendStep | DigestStep, StepPath]]:
    """Every step that sends (``send``, ``digest``), with the document path of its send options."""
    for step, path in walk(steps):
        if isinstance(step, (SendStep, DigestStep)):
            yield step, options_path(step, path)


def map_steps(steps: Sequence[Step], change: Callable[[Step], Step]) -> tuple[Step, ...]:
    """A copy of the tree with ``change`` applied to every step (arms first, then the step itself)."""
    def rebuild(step: Step) -> Step:
        match step:
            case BranchStep(cases=cases, otherwise=otherwise):
                step = dataclasses.replace(step, cases=tuple(dataclasses.replace(c, steps=map_steps(c.steps, change))
                                                             for c in cases),
                                           otherwise=map_steps(otherwise, change))
            case WaitForStep(received=received, timed_out=timed_out):
                step = dataclasses.replace(step, received=map_steps(received, change),
                                           timed_out=map_steps(timed_out, change))
            case SplitStep(variants=variants):
                step = dataclasses.replace(step, variants=tuple(
                    dataclasses.replace(v, steps=map_steps(v.steps, change)) for v in variants))
        return change(step)

    return tuple(rebuild(step) for step in steps)


@dataclass(frozen=True)
class Flow:
    """The control flow of a step tree.

    Attributes:
        first: the id of the first step, or None for an empty journey.
        steps: every step by id.
        following: for each step id, the id of the step that runs after it (and after any arm it
            entered) finishes, or None when the journey ends there.
    """

    first: str | None
    steps: Mapping[str, Step]
    following: Mapping[str, str | None]

    def arm_start(self, step_id: str, arm: Sequence[Step]) -> str | None:
        """Where to go when ``step_id`` enters ``arm``: its first step, or on after an empty arm."""
        return arm[0].id if arm else self.following[step_id]


def flow(steps: Sequence[Step]) -> Flow:
    """Compiles the tree into a `Flow`; a pure function of the definition, so deterministic."""
    by_id: dict[str, Step] = {}
    following: dict[str, str | None] = {}

    def visit(items: Sequence[Step], after: str | None) -> None:
        for index, step in enumerate(items):
            by_id[step.id] = step
            following[step.id] = items[index + 1].id if index + 1 < len(items) else after
            for _, nested, _ in arms(step):
                visit(nested, following[step.id])

    visit(steps, None)
    return Flow(first=steps[0].id if steps else None, steps=by_id, following=following)
