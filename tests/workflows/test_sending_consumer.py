"""Kafka to provider: duplicate events and a consumer replay reach SendGrid once (real broker and server)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from events import samples
from tests.activities.journey_support import channels_for, worker
from tests.activities.provider_stub import ProviderStub, provider
from tests.harness import eventually, start_bridge

__all__ = ["provider"]


async def test_duplicate_event_and_replay_send_one_email(kafka_config: dict[str, str], temporal_client: Client,
                                                         topic: str, tmp_path: Path, unique: str,
                                                         provider: ProviderStub) -> None:
    customer = samples.customer(email="dana@example.com")
    event = samples.purchase(customer)
    first = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                               outbox=tmp_path / "unused.jsonl", suffix=unique, with_worker=False)
    replay = None
    try:
        async with worker(temporal_client, first.task_queue, channels_for(provider.base_url)):
            await first.publish(event, event)
            await eventually(lambda: len(provider.sends()) == 1, message="the thank-you email")
            await eventually(lambda: first.metric("eventflow_workflow_dedupes_total",
                                                  {"journey": "post_purchase"}) == 1, message="the duplicate")
            # A replay: a new consumer group reads the topic from the beginning.
            replay = await start_bridge(kafka_config=kafka_config, client=temporal_client, topic=topic,
                                        outbox=tmp_path / "unused.jsonl", suffix=f"{unique}-replay",
                                        with_worker=False)
            await eventually(lambda: replay is not None and replay.metric(
                "eventflow_workflow_dedupes_total", {"journey": "post_purchase"}) == 2, message="the replay")
    finally:
        await first.stop()
        if replay is not None:
            await replay.stop()

    [email] = provider.sends()
    assert email.body["personalizations"] == [{"to": [{"email": "dana@example.com"}]}]
    assert email.body["custom_args"]["idempotency_key"].endswith("/thank_you")
