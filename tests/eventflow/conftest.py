"""Fixtures of the process-shell tests: a fresh Temporal namespace without Eventflow's search attributes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from eventflow.commands.temporal_setup import missing_search_attributes
from tests.harness import eventually


@pytest.fixture
async def fresh_namespace(temporal_client: Client, unique: str) -> AsyncIterator[str]:
    """A namespace registered for this test: the dev server only registers the attributes on ``default``."""
    name = f"ef-setup-{unique}"
    await temporal_client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=Duration(seconds=86400)))

    async def listed() -> bool:
        try:
            await missing_search_attributes(temporal_client, name)
        except RPCError:
            return False  # the new namespace reaches the frontend's cache shortly after
        return True

    await eventually(listed, message=f"namespace {name} usable")
    yield name
