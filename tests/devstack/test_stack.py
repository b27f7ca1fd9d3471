"""The local servers really serve: a Kafka metadata round trip and a Temporal health check."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient
from temporalio.client import Client

from devstack import Endpoints, Stack


def test_kafka_answers_metadata_requests(endpoints: Endpoints) -> None:
    metadata = AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap_servers}).list_topics(timeout=10)
    assert len(metadata.brokers) == 1


async def test_temporal_passes_its_health_check_and_knows_the_search_attributes(temporal_client: Client) -> None:
    assert await temporal_client.service_client.check_health()
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    response = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=temporal_client.namespace))
    assert {"CustomerId", "JourneyId", "JourneyVersion"} <= set(response.custom_attributes)


def test_the_endpoints_name_the_sessions_database(endpoints: Endpoints, database_url: str) -> None:
    assert endpoints.database_url == database_url


def test_the_test_stack_has_its_own_postgres_port_and_can_leave_postgres_out() -> None:
    assert Stack.for_tests().endpoints.database_url == "postgresql://eventflow:eventflow@127.0.0.1:25432/eventflow"
    assert Stack.for_tests(postgres=False).endpoints.database_url is None
    assert Stack.for_tests(postgres=False).postgres is None
