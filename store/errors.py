"""Errors of the customer store: one root, and the schema checks' two ways to disagree with this release."""

from __future__ import annotations

from activities.errors import LedgerUnavailableError
from core.errors import EventflowError

#: The command that brings a database's schema up to this release.
MIGRATE_COMMAND = "eventflow db migrate"


class StoreError(EventflowError):
    """Root of the customer store's errors."""


class DevicesNotStoredError(StoreError):
    """A device registration reached a consumer that keeps no device list (no customer store configured).

    Push devices live only in the customer store; the record is dead-lettered, to be replayed
    (`eventflow dlq replay`) once ``EVENTFLOW_DATABASE_URL`` is set.
    """

    def __init__(self) -> None:
        super().__init__("push devices are kept in the customer store, and this consumer has none "
                         "(set EVENTFLOW_DATABASE_URL, then replay the dead-lettered device events)")


class SchemaOutdatedError(StoreError):
    """The database's schema is older than this release needs (or empty); migrating fixes it.

    Attributes:
        current: the database's revision; None when no migration has run.
        required: the revision this release's code is written against.
    """

    def __init__(self, current: str | None, required: str) -> None:
        super().__init__(f"database schema is at {current or '(none)'}, this release needs {required}: "
                         f"run `{MIGRATE_COMMAND}`")
        self.current = current
        self.required = required


class SchemaAheadError(StoreError):
    """The database's revision is one this release does not know: a newer release migrated it.

    Attributes:
        current: the database's revision.
        required: the newest revision this release knows.
    """

    def __init__(self, current: str, required: str) -> None:
        super().__init__(f"database schema is at {current}, which this release does not know (its newest is "
                         f"{required}): a newer release migrated it; run that release or a later one")
        self.current = current
        self.required = required


class StoreUnavailableError(StoreError, LedgerUnavailableError):
    """The database could not answer a call (down, restarting, out of connections, a statement timed out).

    Transient: the consumer retries the record in order, the send activity retries its call.

    Attributes:
        kind: the statement kind (`store.metrics.StatementKind` value) that failed.
        cause: the driver's error class name (never its message, which may quote values).
    """

    def __init__(self, kind: str, cause: str) -> None:
        super().__init__(f"customer store unavailable during {kind}: {cause}")
        self.kind = kind
        self.cause = cause
