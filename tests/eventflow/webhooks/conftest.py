"""A webhook receiver, the feedback consumer and a journey worker on the real Kafka and Temporal servers.

Providers are the SDKs pointed at the provider stub; the test plays the provider's webhook side,
signing with the providers' own helpers (`tests.eventflow.webhooks.signing`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from yarl import URL

from activities.channels import Channel
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig
from consumer.feedback import FeedbackApplier, FeedbackConsumer, FeedbackMetrics
from consumer.topics import ensure_topics
from eventflow.webhooks import KafkaHandoff, SendGridVerifier, TwilioVerifier, WebhookMetrics, WebhookServer
from tests.activities.journey_support import TWILIO_SID, worker
from tests.activities.provider_stub import ProviderStub, provider
from tests.eventflow.webhooks.signing import TWILIO_TOKEN, SendGridSigner

__all__ = ["provider"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def channels(provider_url: str, public_url: str) -> dict[str, Channel]:
    """SendGrid and Twilio channels on the stub; Twilio asks for status callbacks at ``public_url``."""
    twilio = TwilioClient(TwilioConfig(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN, sms_from="+15550001111",
                                       whatsapp_from="+15550002222", base_url=provider_url, timeout_seconds=5,
                                       status_callback_base_url=public_url))
    return {"email": SendGridChannel(SendGridConfig(api_key="SG.test-key", from_email="shop@example.com",
                                                    base_url=provider_url, timeout_seconds=5)),
            "sms": TwilioChannel(twilio, "sms"), "whatsapp": TwilioChannel(twilio, "whatsapp")}


@dataclass
class FeedbackStack:
    """What a test drives: the receiver's URL, the signer, the queue, the topic and the metrics."""

    url: str
    signer: SendGridSigner
    queue: str
    topic: str
    registry: CollectorRegistry
    client: Client
    http: aiohttp.ClientSession
    kafka_config: dict[str, str]

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        # As sent: the client would otherwise normalise the query's escapes, and Twilio signs the URL verbatim.
        async with self.http.post(URL(self.url + path, encoded=True), data=body, headers=headers) as response:
            return response.status, await response.text()

    def records(self) -> int:
        """Records on the feedback topic (its end offset; one partition)."""
        reader = Consumer({**self.kafka_config, "group.id": "watermarks"})
        try:
            return int(reader.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)[1])
        finally:
            reader.close()

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def feedback_stack(kafka_config: dict[str, str], temporal_client: Client, provider: ProviderStub,
                         unique: str) -> AsyncIterator[FeedbackStack]:
    topic, queue = f"feedback-{unique}", f"q-{unique}"
    await asyncio.to_thread(ensure_topics, kafka_config, [topic], partitions=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    signer = SendGridSigner()
    registry = CollectorRegistry()
    handoff = KafkaHandoff(kafka_config, topic)
    server = WebhookServer(handoff, WebhookMetrics(registry), sendgrid=SendGridVerifier(signer.verification_key, 300),
                           twilio=TwilioVerifier(TWILIO_TOKEN, url), host="127.0.0.1", port=port)
    metrics = FeedbackMetrics(registry)
    consumer = FeedbackConsumer(kafka_config, topic, f"feedback-{unique}",
                                FeedbackApplier(temporal_client, queue, metrics), metrics=metrics)
    stop = asyncio.Event()
    await server.start()
    consuming = asyncio.create_task(consumer.run(stop))
    try:
        async with worker(temporal_client, queue, channels(provider.base_url, url)), aiohttp.ClientSession() as http:
            yield FeedbackStack(url, signer, queue, topic, registry, temporal_client, http, kafka_config)
    finally:
        stop.set()
        await server.stop()
        await asyncio.wait_for(consuming, 15)
        handoff.close()
