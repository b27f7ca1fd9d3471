"""``eventflow temporal setup`` against the real Temporal dev server, on a fresh namespace.

The dev server registers the attributes on ``default`` when it starts, so each test registers its
own namespace (through the workflow service, as an operator would) where they are missing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from consumer import dispatch
from devstack import Endpoints
from devstack.stack import SEARCH_ATTRIBUTES as DEV_SERVER_ATTRIBUTES
from eventflow.commands.temporal_setup import (
    SEARCH_ATTRIBUTES,
    SearchAttributeSetupError,
    cloud_instructions,
    missing_search_attributes,
    register_search_attributes,
    search_attributes_check,
)
from tests.harness import eventually

REPO = Path(__file__).resolve().parents[3]


def test_the_attributes_are_those_the_consumer_starts_journeys_with_and_the_dev_server_registers() -> None:
    assert {k: str(v) for k, v in SEARCH_ATTRIBUTES.items()} == DEV_SERVER_ATTRIBUTES
    names = {dispatch.CUSTOMER_ID.name, dispatch.JOURNEY_ID.name, dispatch.JOURNEY_VERSION.name}
    assert names == set(SEARCH_ATTRIBUTES)


async def _start_journey_like(endpoints: Endpoints, namespace: str, workflow_id: str) -> None:
    client = await Client.connect(endpoints.temporal_address, namespace=namespace)
    handle = await client.start_workflow(
        "Journey", "unused", id=workflow_id, task_queue=f"nobody-polls-{workflow_id}",
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(SearchAttributeKey.for_keyword("CustomerId"), "c-1"),
            SearchAttributePair(SearchAttributeKey.for_keyword("JourneyId"), "welcome"),
            SearchAttributePair(SearchAttributeKey.for_int("JourneyVersion"), 1)]))
    await handle.terminate("test")


def _setup_command(endpoints: Endpoints, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "TEMPORAL_"))}
    env.update({"PYTHONPATH": str(REPO), "TEMPORAL_ADDRESS": endpoints.temporal_address,
                "TEMPORAL_NAMESPACE": namespace})
    return subprocess.run([sys.executable, "-m", "eventflow.cli", "temporal", "setup"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_setup_registers_the_attributes_once_and_readiness_follows(
        temporal_client: Client, endpoints: Endpoints, fresh_namespace: str, unique: str) -> None:
    namespace = fresh_namespace
    check = search_attributes_check(temporal_client, namespace)
    ready, detail = await check()
    assert not ready
    assert detail == (f"missing CustomerId, JourneyId, JourneyVersion in namespace {namespace}: "
                      "run eventflow temporal setup")
    with pytest.raises(RPCError):  # what every journey start met before: rejected, then dead-lettered
        await _start_journey_like(endpoints, namespace, f"before-{unique}")

    first = _setup_command(endpoints, namespace)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (f"namespace {namespace}: search attributes added CustomerId, JourneyId, "
                                    "JourneyVersion")
    second = _setup_command(endpoints, namespace)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == (f"namespace {namespace}: search attributes nothing to add; already "
                                     "registered: CustomerId, JourneyId, JourneyVersion")

    async def attributes_ready() -> bool:
        return (await check())[0]

    await eventually(attributes_ready, message="search attributes visible")
    assert await check() == (True, "ok")
    attempts = 0

    async def started() -> bool:
        nonlocal attempts
        attempts += 1
        try:
            await _start_journey_like(endpoints, namespace, f"after-{unique}-{attempts}")
        except RPCError:
            return False  # the frontend's attribute cache may lag the registration briefly
        return True

    await eventually(started, message="a start with the attributes is accepted")


async def test_setup_is_idempotent_when_called_concurrently(temporal_client: Client, fresh_namespace: str) -> None:
    namespace = fresh_namespace
    results = await asyncio.gather(*(register_search_attributes(temporal_client, namespace) for _ in range(3)))
    assert {name for result in results for name in result.added} == set(SEARCH_ATTRIBUTES)
    assert not await missing_search_attributes(temporal_client, namespace)


async def test_an_attribute_of_another_type_is_an_error_naming_it(temporal_client: Client, fresh_namespace: str) -> None:
    await temporal_client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=fresh_namespace, search_attributes={"JourneyVersion": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}))

    async def clash_visible() -> bool:
        try:
            await missing_search_attributes(temporal_client, fresh_namespace)
        except SearchAttributeSetupError:
            return True
        return False

    await eventually(clash_visible, message="the Keyword JourneyVersion listed")
    with pytest.raises(SearchAttributeSetupError) as clash:
        await register_search_attributes(temporal_client, fresh_namespace)
    assert "JourneyVersion must be Int" in str(clash.value) and clash.value.namespace == fresh_namespace
    ready, detail = await search_attributes_check(temporal_client, fresh_namespace)()
    assert not ready and "JourneyVersion must be Int" in detail


def test_cloud_instructions_name_every_attribute_and_the_namespace() -> None:
    text = cloud_instructions("shop.a1b2c")
    assert "--namespace shop.a1b2c" in text
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"--search-attribute '{name}={kind}'" in text
