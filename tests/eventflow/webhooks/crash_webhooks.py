"""A webhook receiver in its own process, for the crash test: ``python -m tests.eventflow.webhooks.crash_webhooks
BOOTSTRAP TOPIC KEY PORT HOLD``. With HOLD=1 each request stops after its records are queued and before
the flush (printing ``held``), so the test can SIGKILL it exactly there."""

from __future__ import annotations

import asyncio
import sys
import time

from prometheus_client import CollectorRegistry

from eventflow.webhooks import KafkaHandoff, SendGridVerifier, WebhookMetrics, WebhookServer


def _stop_before_flush() -> None:
    print("held", flush=True)
    while True:  # until the test kills the process
        time.sleep(60)


async def main(bootstrap: str, topic: str, key: str, port: int, hold: bool) -> None:
    handoff = KafkaHandoff({"bootstrap.servers": bootstrap}, topic,
                           before_flush=_stop_before_flush if hold else None)
    server = WebhookServer(handoff, WebhookMetrics(CollectorRegistry()), sendgrid=SendGridVerifier(key, 300),
                           twilio=None, host="127.0.0.1", port=port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    bootstrap, topic, key, port, hold = sys.argv[1:6]
    asyncio.run(main(bootstrap, topic, key, int(port), hold == "1"))
