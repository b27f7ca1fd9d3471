"""``eventflow temporal setup``: the custom search attributes journeys are found by.

A consumer without a customer store starts every journey with ``CustomerId`` and ``JourneyId``
(Keyword) and ``JourneyVersion`` (Int); with a store it records them there instead, and the
commands that find journeys query both (docs/architecture.md, ADR-10a), so journeys started before
the store are still found. A namespace without them rejects those starts and those queries. The dev server registers them when it starts; a real cluster needs this command
(the chart runs it in a pre-install/pre-upgrade hook Job), and Temporal Cloud needs its operator
to add them (`CLOUD_INSTRUCTIONS`), because Cloud does not let a namespace's clients do it.
`search_attributes_check` is the readiness check that says which are missing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.errors import EventflowError
from core.http import ReadinessCheck


class AttributeType(enum.StrEnum):
    """The search attribute types Eventflow uses, named as Temporal's tools name them."""

    KEYWORD = "Keyword"
    INT = "Int"

    @property
    def indexed(self) -> IndexedValueType.ValueType:
        """The API's enum value."""
        match self:
            case AttributeType.KEYWORD:
                return IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
            case AttributeType.INT:
                return IndexedValueType.INDEXED_VALUE_TYPE_INT


SEARCH_ATTRIBUTES: Mapping[str, AttributeType] = {
    "CustomerId": AttributeType.KEYWORD,
    "JourneyId": AttributeType.KEYWORD,
    "JourneyVersion": AttributeType.INT,
}
"""Every custom search attribute a journey is started with, and its type."""

_NO_OPERATOR_ACCESS = (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED)


def cloud_instructions(namespace: str) -> str:
    """What a Temporal Cloud operator runs (or clicks) to add the attributes to ``namespace``."""
    flags = " ".join(f"--search-attribute '{name}={kind}'" for name, kind in SEARCH_ATTRIBUTES.items())
    return (f"On Temporal Cloud, an account admin adds them: tcld namespace search-attributes add "
            f"--namespace {namespace} {flags} (or in the Cloud UI: Namespaces > {namespace} > "
            f"Custom Search Attributes)")


class SearchAttributeSetupError(EventflowError):
    """The search attributes could not be registered; ``instructions`` says what to do instead.

    Attributes:
        namespace: the namespace.
        missing: the attributes still missing.
        instructions: what an operator must do.
    """

    def __init__(self, namespace: str, missing: Mapping[str, AttributeType], instructions: str) -> None:
        names = ", ".join(f"{name} ({kind})" for name, kind in missing.items())
        super().__init__(f"namespace {namespace}: search attributes {names} are missing and cannot be added "
                         f"from here. {instructions}")
        self.namespace = namespace
        self.missing = dict(missing)
        self.instructions = instructions


@dataclass(frozen=True)
class SetupResult:
    """What `register_search_attributes` found and did."""

    namespace: str
    added: tuple[str, ...]
    already_present: tuple[str, ...]


def _mismatches(existing: Mapping[str, int]) -> dict[str, AttributeType]:
    return {name: kind for name, kind in SEARCH_ATTRIBUTES.items()
            if name in existing and existing[name] != kind.indexed}


async def missing_search_attributes(client: Client, namespace: str) -> dict[str, AttributeType]:
    """The attributes ``namespace`` lacks (empty when all are there).

    Raises:
        RPCError: when the namespace's attributes cannot be listed.
        SearchAttributeSetupError: when one exists with another type (a start would be rejected).
    """
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    existing = {**dict(listed.system_attributes), **dict(listed.custom_attributes)}
    wrong = _mismatches(existing)
    if wrong:
        names = ", ".join(f"{name} must be {kind}" for name, kind in wrong.items())
        raise SearchAttributeSetupError(namespace, wrong, f"They exist with another type: {names}; "
                                                          "rename or remove them first.")
    return {name: kind for name, kind in SEARCH_ATTRIBUTES.items() if name not in existing}


async def register_search_attributes(client: Client, namespace: str) -> SetupResult:
    """Adds the missing attributes to ``namespace``; idempotent ("already exists" is success).

    Raises:
        SearchAttributeSetupError: on Temporal Cloud or without operator rights, with instructions.
    """
    try:
        missing = await missing_search_attributes(client, namespace)
        if missing:
            request = AddSearchAttributesRequest(
                namespace=namespace, search_attributes={name: kind.indexed for name, kind in missing.items()})
            try:
                await client.operator_service.add_search_attributes(request)
            except RPCError as exc:
                if exc.status != RPCStatusCode.ALREADY_EXISTS:  # a concurrent setup won the race
                    raise
    except RPCError as exc:
        if exc.status in _NO_OPERATOR_ACCESS:
            raise SearchAttributeSetupError(namespace, SEARCH_ATTRIBUTES, cloud_instructions(namespace)) from exc
        raise
    present = tuple(name for name in SEARCH_ATTRIBUTES if name not in missing)
    return SetupResult(namespace=namespace, added=tuple(missing), already_present=present)


def search_attributes_check(client: Client, namespace: str) -> ReadinessCheck:
    """Readiness: not ready while a search attribute journeys are started with is missing.

    Once all are present the verdict is kept (attributes are not removed in normal operation), so
    later probes cost no RPC. Without the rights to list them (Temporal Cloud API keys scoped to
    the namespace may lack them) the check reports "unverified" and does not block readiness.
    """
    verified: list[bool] = []

    async def check() -> tuple[bool, str]:
        if verified:
            return True, "ok"
        try:
            missing = await missing_search_attributes(client, namespace)
        except SearchAttributeSetupError as exc:
            return False, str(exc)
        except RPCError as exc:
            if exc.status in _NO_OPERATOR_ACCESS:
                return True, "unverified (no rights to list them)"
            return False, f"cannot list ({exc.status.name if exc.status else type(exc).__name__})"
        if missing:
            return False, (f"missing {', '.join(missing)} in namespace {namespace}: "
                           "run eventflow temporal setup")
        verified.append(True)
        return True, "ok"

    return check
