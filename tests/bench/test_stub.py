"""The benchmark's SendGrid stub answers the real SendGrid channel, counts duplicates by key and order, refuses
sends in an outage and posts signed processed events that ``eventflow webhooks`` accepts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from activities.channels import OutgoingMessage
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.errors import RetryableSendError
from activities.outcomes import DeliveryOutcome
from bench.stub import EventWebhookPoster, SendGridStub
from eventflow.webhooks.parsing import sendgrid_events
from eventflow.webhooks.verify import SendGridVerifier


@pytest.fixture
def stub() -> Iterator[SendGridStub]:
    server = SendGridStub()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _message(key: str, order_id: str) -> OutgoingMessage:
    return OutgoingMessage(idempotency_key=key, channel="email", to="ana@example.com", body="hi",
                           subject=f"bench order {order_id}")


async def test_sends_are_counted_per_order_and_repeats_are_duplicates(stub: SendGridStub) -> None:
    channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                             base_url=stub.base_url))
    result = await channel.deliver(_message("k1", "cap-1"))
    assert result.provider_message_id is not None and result.provider_message_id.startswith("bench-")
    await channel.deliver(_message("k2", "cap-2"))
    await channel.deliver(_message("k1", "cap-1"))  # a second attempt of the same send
    await channel.deliver(_message("k3", "cap-2"))  # the same order sent again under another key
    await channel.deliver(_message("k4", "hot-1"))

    assert [r.idempotency_key for r in stub.requests("cap-")] == ["k1", "k2", "k1", "k3"]
    first = stub.first_sends("cap-")
    assert {order: r.idempotency_key for order, r in first.items()} == {"cap-1": "k1", "cap-2": "k2"}
    assert stub.duplicates("cap-") == 2
    assert stub.duplicates("hot-") == 0
    assert list(stub.first_sends("hot-")) == ["hot-1"]


async def test_a_broadcasts_sends_are_counted_by_key_and_a_recipient_reached_twice_is_a_duplicate(
        stub: SendGridStub) -> None:
    channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                             base_url=stub.base_url))

    def news(key: str, to: str) -> OutgoingMessage:
        return OutgoingMessage(idempotency_key=key, channel="email", to=to, body="hi", subject="bench broadcast b1")

    await channel.deliver(news("broadcast:b1:c1", "c1@bench.example"))
    await channel.deliver(news("broadcast:b1:c2", "c2@bench.example"))
    await channel.deliver(news("broadcast:b10:c1", "c1@bench.example"))  # another broadcast: not counted
    assert sorted(stub.first_sends_by_key("broadcast:b1:")) == ["broadcast:b1:c1", "broadcast:b1:c2"]
    assert stub.first_sends_by_key("broadcast:b1:")["broadcast:b1:c2"].to == "c2@bench.example"
    assert stub.duplicates_by_key("broadcast:b1:") == 0
    await channel.deliver(news("broadcast:b1:c1", "c1@bench.example"))  # the same send again
    assert stub.duplicates_by_key("broadcast:b1:") == 1
    await channel.deliver(news("broadcast:b1:c3", "c2@bench.example"))  # one recipient under a second key
    assert stub.duplicates_by_key("broadcast:b1:") == 2


async def test_an_outage_refuses_every_send_with_503_and_refused_requests_are_not_sends(stub: SendGridStub) -> None:
    channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                             base_url=stub.base_url))
    stub.unavailable(True)
    with pytest.raises(RetryableSendError):
        await channel.deliver(_message("k1", "fault-1"))
    stub.unavailable(False)
    await channel.deliver(_message("k1", "fault-1"))

    assert stub.refused("fault-") == 1
    assert list(stub.first_sends("fault-")) == ["fault-1"] and stub.duplicates("fault-") == 0


def test_accepted_sends_reach_the_webhook_as_signed_processed_events_and_a_refused_post_is_retried() -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    answers = iter([503, 200])

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = next(answers, 200)
            if status == 200:
                received.append((body, dict(self.headers.items())))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # base-class signature
            return

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    poster = EventWebhookPoster(interval_seconds=0.05)
    server = SendGridStub(events=poster)
    server.start()
    poster.start(f"http://127.0.0.1:{receiver.server_address[1]}/sendgrid/events")
    try:
        channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                                 base_url=server.base_url))
        message = OutgoingMessage(idempotency_key="journey:1/thank_you", channel="email", to="ana@example.com",
                                  body="hi", subject="bench order fault-1", customer_id="c1", workflow_id="journey:1")
        result = asyncio.run(channel.deliver(message))
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
        receiver.shutdown()
        receiver.server_close()

    assert poster.failed_posts >= 1 and len(received) == 1  # the first post was refused, then posted again
    body, headers = received[0]
    verifier = SendGridVerifier(poster.verification_key, replay_window_seconds=300)
    assert verifier.verify(body, {k: v for k, v in headers.items()}, time.time())
    [report] = sendgrid_events(body)  # what eventflow webhooks makes of it
    assert report.report is not None
    assert (report.report.report.idempotency_key, report.report.report.outcome) == ("journey:1/thank_you",
                                                                                   DeliveryOutcome.ACCEPTED)
    assert result.provider_message_id and report.report.report.provider_message_id == result.provider_message_id


async def test_many_senders_connecting_at_once_are_all_served(stub: SendGridStub) -> None:
    # The SDK opens a connection per request; behind the standard library's backlog of 5, some of 64 at
    # once were reset (or waited out a SYN retransmission), so the stub set the pace of the phase.
    channel = SendGridChannel(SendGridConfig(api_key="SG.test", from_email="bench@example.com",
                                             base_url=stub.base_url))
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(64))  # as many calls as a worker makes
    results = await asyncio.gather(*(channel.deliver(_message(f"many-{n}", f"many-{n}")) for n in range(256)),
                                   return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(stub.first_sends("many-")) == 256
