"""Errors of the customer store: one root, and the schema checks' two ways to disagree with this release."""

from __future__ import annotations

from core.errors import EventflowError

#: The command that brings a database's schema up to this release.
MIGRATE_COMMAND = "eventflow db migrate"


class StoreError(EventflowError):
    """Root of the customer store's errors."""


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
