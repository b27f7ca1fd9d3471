"""structlog set-up: JSON lines in production, with email addresses and phone numbers masked.

Masking is the last step before rendering and runs on the formatted traceback too, so a
``log.exception`` cannot leak an address from an exception message. Every string field is cut to
`MAX_FIELD_CHARS` and the patterns are written so one pass is linear in the text's length (no
backtracking between candidate positions): a 100 KB dead-letter reason costs no more than its
length, and a log call can never stall the event loop that also answers ``/healthz``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO, cast

import structlog
from opentelemetry import trace
from temporalio import workflow

MAX_FIELD_CHARS = 4096
"""A logged string longer than this is cut (with a note of how much was cut) after masking."""

CONTACT_FIELDS = frozenset({
    "email", "email_address", "phone", "phone_number", "mobile", "msisdn", "to", "to_address",
    "recipient", "address", "contact", "customer_email", "customer_phone",
})
"""Field names whose whole value is a contact detail, masked even when no pattern recognises it."""

# Letters and digits of any script (``josé``), and ``. _ + -``.
_LOCAL_CHARS = r"\w.+\-"
# The lookbehind lets a local part start only where a run of local-part characters starts, and the
# possessive quantifiers never give characters back: each character is examined a bounded number
# of times. Validation (a domain, digit counts) happens in the callbacks instead of the pattern.
# The at sign may be URL-encoded (``%40``) or a full-width or small form (``＠``, ``﹫``).
_EMAIL = re.compile(rf"(?<![{_LOCAL_CHARS}])([{_LOCAL_CHARS}])[{_LOCAL_CHARS}]*+(?:@|%40|\uff20|\ufe6b)([\w.\-]++)")
# A phone candidate is a maximal run of digits, spaces, parentheses, hyphens, dots and slashes,
# optionally starting with ``+`` (or its URL encoding ``%2B``, as in a provider's request log). It
# never starts inside a word or after ``-``/``.``/``/``, so ids such as ``evt-000001`` or
# ``cust_12345678`` are left alone; the callback keeps runs that are not 7-15 digits, are glued to
# a word, or use dots and slashes the way versions, addresses and dates do.
_PHONE = re.compile(r"(?:(?<=%3A)|(?<=%3a)|(?<![\w\-./+%]))(?:\+|%2[Bb])?\(?\d[\d ()\-./]*+")
_PHONE_TRAILING = " ()-./"
#: Words that, before a colon, make the number after it a contact (``to:4155550142``, ``tel:0151...``).
_CONTACT_PREFIXES = frozenset({"to", "from", "tel", "phone", "mobile", "cell", "fax", "sms", "whatsapp", "call",
                               "msisdn", "recipient", "contact"})
_WORD_BEFORE = re.compile(r"(\w+)\Z")


def _mask_email(match: re.Match[str]) -> str:
    domain = match.group(2)
    if "." not in domain.strip("."):
        return match.group(0)
    return f"{match.group(1)}***@{domain}"


def _separated_like_a_phone(candidate: str) -> bool:
    """Dots and slashes as phones use them: ``415.555.0142``, ``0151/12345678`` (not ``1.2345678``, IPs, dates)."""
    if "/" in candidate:
        # One slash after an area code that starts with 0 (or a country code): 0151/12345678.
        return candidate.count("/") == 1 and candidate.lstrip("(").startswith(("0", "+", "%2"))
    if "." in candidate:
        groups = candidate.split(".")
        ipv4 = len(groups) == 4 and all(g.isdigit() and len(g) <= 3 and int(g) <= 255 for g in groups)
        return len(groups) >= 3 and all(len(g.strip(" ()-+")) >= 2 for g in groups) and not ipv4
    return True


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    candidate = text.rstrip(_PHONE_TRAILING)
    tail = text[len(candidate):]
    following = match.string[match.end():match.end() + 1]
    digits = [c for c in candidate if c.isdigit()]
    if match.start() > 0 and match.string[match.start() - 1] == ":" and text[0].isdigit():
        # ``evt:0000001`` is an id; ``to:4155550142``, ``tel:+49...`` and ``To: 0151...`` are numbers.
        word = _WORD_BEFORE.search(match.string, max(0, match.start() - 21), match.start() - 1)
        if word is None or word.group(1).lower() not in _CONTACT_PREFIXES:
            return text
    if not 7 <= len(digits) <= 15 or (not tail and (following.isalnum() or following == "_")):
        return text
    if not _separated_like_a_phone(candidate):
        return text
    return f"***{''.join(digits[-2:])}{tail}"


def mask_contact_details(text: str) -> str:
    """Masks email addresses (``a***@example.com``) and phone numbers (``***42``) inside ``text``.

    Linear in ``len(text)``; ids that merely end in digits (``evt-000001``) stay intact.
    """
    return _PHONE.sub(_mask_phone, _EMAIL.sub(_mask_email, text))


def mask_contact_value(value: str) -> str:
    """Masks a value known to be a contact detail, whether or not it looks like one."""
    masked = mask_contact_details(value)
    if masked != value:
        return masked
    return f"***{value[-2:]}" if len(value) > 6 else "***"


def truncate(text: str, limit: int = MAX_FIELD_CHARS, *, original_length: int | None = None) -> str:
    """Cuts ``text`` to ``limit`` characters, saying how many of ``original_length`` were dropped."""
    length = len(text) if original_length is None else original_length
    if length <= limit:
        return text
    return f"{text[:limit]}...[{length - limit} chars truncated]"


def _mask_field(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return mask_contact_details(text)
    # Cut well beyond the limit first so masking is bounded; an address split by this first cut
    # lies beyond the final cut, so no part of it reaches the output.
    return truncate(mask_contact_details(text[:MAX_FIELD_CHARS * 2]), original_length=len(text))


def _redact(value: Any, depth: int = 0) -> Any:
    """``value`` with every contact detail masked, as JSON can hold it: nested values walked, others printed."""
    if isinstance(value, str):
        return _mask_field(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= 8:  # a pathological nesting is summarised rather than walked
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {_mask_field(str(k)): _redact_named(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact(v, depth + 1) for v in list(value)[:100]]
    # Anything else is printed by the renderer (an exception as its repr, with its message and
    # arguments); print it here first, so the printed text is masked too.
    return _mask_field(_printed(value))


def _printed(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value[:MAX_FIELD_CHARS * 2])
    try:
        return repr(value) if isinstance(value, BaseException) else str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def _redact_named(key: str, value: Any, depth: int) -> Any:
    if isinstance(value, str) and key.lower() in CONTACT_FIELDS:
        return mask_contact_value(value[:MAX_FIELD_CHARS])
    return _redact(value, depth)


_BOOKKEEPING = frozenset({"_record", "_from_structlog"})  # structlog's stdlib bridge; removed before rendering


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no email address or phone number leaves the process in clear.

    Runs after `structlog.processors.format_exc_info`, so the rendered traceback (``exception``)
    is masked like any other field.
    """
    for key, value in list(event_dict.items()):
        if key in _BOOKKEEPING:
            continue
        event_dict[key] = _redact_named(key, value, 0)
    return event_dict


# Loggers that print contact details in their own messages: Twilio's HTTP client logs every
# request's form body (``To=%2B4915...``) at INFO. Masking would catch it, but the lines carry no
# information an operator needs that the send metrics and events do not.
QUIETED_LOGGERS = ("twilio.http_client",)


# Extras that carry no information for a reader: Temporal's core log entry object (its message and
# fields are already in the message) and the SDK's internal marker.
_DROPPED_EXTRAS = ("temporal_log", "__temporal_error_identifier")


def _drop_internal_extras(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _DROPPED_EXTRAS:
        event_dict.pop(key, None)
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Adds ``trace_id`` and ``span_id`` (hex, as trace back-ends show them) while a span is active."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _json_default(value: object) -> str:
    # Replaces structlog's fallback, which imports a module lazily: inside Temporal's workflow
    # sandbox that import re-runs the module under the sandbox's restrictions and fails.
    return repr(value)


@contextmanager
def _outside_the_sandbox() -> Iterator[None]:
    """Runs logging code as if outside Temporal's workflow sandbox (a no-op outside it).

    A log call from workflow code runs the handlers and processors on the sandboxed thread, where a
    lazy import would load a fresh copy of the module under the sandbox's restrictions
    (``RestrictedWorkflowAccessError: Cannot access os.environ.get``) and the record would be lost
    in a ``--- Logging error ---`` block. Writing a log line has no effect on the workflow's
    decisions, so lifting the restrictions and passing imports through here is safe.
    """
    if not workflow.unsafe.in_sandbox():
        yield
        return
    with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
        yield


class SandboxSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]  # writes the default stream (stderr)
    """The stdlib handler Eventflow installs: formats and writes outside the workflow sandbox."""

    def emit(self, record: logging.LogRecord) -> None:
        with _outside_the_sandbox():
            super().emit(record)


def _sandbox_safe(wrapper: type[Any]) -> type[Any]:
    class SandboxSafeBoundLogger(wrapper):  # type: ignore[misc]  # structlog hands its wrapper class as Any
        def _proxy_to_logger(self, method_name: str, event: str | None = None, **event_kw: Any) -> Any:
            with _outside_the_sandbox():
                return super()._proxy_to_logger(method_name, event, **event_kw)

    return SandboxSafeBoundLogger


class _CurrentStderr:
    """Writes to ``sys.stderr`` as it is at each write, so a later redirection (a test's capture) is followed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: Libraries whose own log lines a command line's user does not need (librdkafka's through
#: confluent-kafka's ``logger`` setting, the Temporal SDK's and its core's).
LIBRARY_LOGGERS = ("librdkafka", "temporalio")


def configure_for_command(log_format: str = "json") -> None:
    """Logging for a command (not a long-running process): its own warnings, in the processes' format;
    library chatter only at debug level, where a command never logs."""
    configure(log_format, logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def configure(log_format: str = "json", level: int = logging.INFO, *, stream: TextIO | None = None) -> None:
    """Configures structlog and routes stdlib logging (the Temporal SDK's, librdkafka's) through it.

    Args:
        log_format: ``json`` (one object per line) or ``console``.
        level: the lowest level logged.
        stream: where lines go; standard error by default (whatever ``sys.stderr`` is when a line is written).
    """
    # cast: _CurrentStderr has the two methods PrintLogger and StreamHandler call, not all of TextIO's.
    out = cast(TextIO, _CurrentStderr()) if stream is None else stream
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _drop_internal_extras,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(default=_json_default) if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=_sandbox_safe(structlog.make_filtering_bound_logger(level)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = SandboxSafeHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)  # undo a command's quieting (configure_for_command)
