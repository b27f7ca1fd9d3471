"""A local SendGrid-speaking server that counts and timestamps every send (``POST /v3/mail/send``).

It runs on its own threads (the standard library's threading HTTP server), so its timestamps do
not wait for the benchmark's event loop. Each request is recorded with the wall-clock time it
arrived, its idempotency key (SendGrid ``custom_args``, or the Eventflow header) and the order id
in the subject (the benchmark templates write ``bench order <order_id>``), and answered 202 the
way SendGrid does.

For the fault phase it behaves more like the real service: it answers after a random 20-80 ms, it
can answer 503 to everything for a while (an outage: such a request is refused, not a send), and
it posts a signed ``processed`` event for every accepted send to an Event Webhook URL, the way
SendGrid's signed Event Webhook does (`EventWebhookPoster`), so ``eventflow webhooks`` can settle
a send whose answer died with the process that asked.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from eventflow.webhooks.verify import SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER

SEND_PATH = "/v3/mail/send"
IDEMPOTENCY_HEADER = "X-Eventflow-Idempotency-Key"


@dataclass(frozen=True)
class SendRequest:
    """One provider call as it arrived."""

    at_epoch_seconds: float
    idempotency_key: str
    order_id: str
    #: The first recipient address (a broadcast's requests share one subject, so they are told apart by
    #: key and by address).
    to: str = ""


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _parse(document: dict[str, Any], headers: Any) -> tuple[str, str, str]:
    key = str((document.get("custom_args") or {}).get("idempotency_key") or headers.get(IDEMPOTENCY_HEADER) or "")
    subject = str(document.get("subject") or "")
    to = ""
    for personalization in document.get("personalizations") or ():
        subject = subject or str(personalization.get("subject") or "")
        for recipient in personalization.get("to") or ():
            to = to or str(recipient.get("email") or "")
    order_id = subject.rsplit(" ", 1)[-1] if subject.startswith("bench order ") else ""
    return key, order_id, to


class EventWebhookPoster:
    """SendGrid's signed Event Webhook, for the stub's accepted sends.

    Events are posted in batches from a thread of its own, signed with ECDSA P-256 over the
    timestamp header and the body as SendGrid signs them; a batch the receiver does not take (it
    is down, or answers other than 2xx) is posted again later, as SendGrid retries.

    Args:
        interval_seconds: time between two posts.
    """

    def __init__(self, interval_seconds: float = 0.5) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._interval = interval_seconds
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._url = ""
        self._thread = threading.Thread(target=self._run, name="sendgrid-event-webhook", daemon=True)
        self.posted_events = 0
        self.failed_posts = 0

    @property
    def verification_key(self) -> str:
        """The base64 public key SendGrid's Mail Settings would show (``SENDGRID_WEBHOOK_VERIFICATION_KEY``)."""
        der = self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def start(self, url: str) -> None:
        """Starts posting to ``url``, the local ``eventflow webhooks``'s ``/sendgrid/events``."""
        if not url.startswith("http://127.0.0.1:"):
            raise ValueError(f"{url} is not a local http URL")
        self._url = url
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def processed(self, document: dict[str, Any], message_id: str) -> None:
        """Queues the ``processed`` event of an accepted send, echoing its ``custom_args`` as SendGrid does."""
        email = ""
        for personalization in document.get("personalizations") or ():
            for recipient in personalization.get("to") or ():
                email = email or str(recipient.get("email") or "")
        custom_args = document.get("custom_args") or {}
        with self._lock:
            self._pending.append({"email": email, "timestamp": int(time.time()), "event": "processed",
                                  "sg_event_id": uuid.uuid4().hex, "sg_message_id": f"{message_id}.filter0001.1.0",
                                  **{str(k): str(v) for k, v in custom_args.items()}})

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._post_pending()
        self._post_pending()

    def _post_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[:500], self._pending[500:]
        if not batch:
            return
        body = json.dumps(batch).encode()
        stamp = str(int(time.time()))
        signature = self._key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {SENDGRID_SIGNATURE_HEADER: base64.b64encode(signature).decode(), SENDGRID_TIMESTAMP_HEADER: stamp,
                   "Content-Type": "application/json"}
        # S310: the URL is a local http one, checked in start().
        request = urllib.request.Request(self._url, data=body, method="POST", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                taken = 200 <= response.status < 300
        except (urllib.error.URLError, OSError):
            taken = False
        if taken:
            self.posted_events += len(batch)
            return
        self.failed_posts += 1
        with self._lock:
            self._pending[:0] = batch


class _ListeningServer(ThreadingHTTPServer):
    #: The standard library's listen backlog is 5: with more senders connecting at once (the SendGrid
    #: SDK opens a connection per request) the kernel drops their SYNs and each waits out a one-second
    #: retransmission, so the stub, not the sender, would set the pace. SendGrid has no such queue.
    request_queue_size = 1024


class SendGridStub:
    """Counts sends at the provider: the only place a duplicate is certain to show.

    Args:
        latency_seconds: the range each answer's delay is drawn from (none by default).
        events: posts a ``processed`` event for each accepted send (none by default).
    """

    def __init__(self, *, latency_seconds: tuple[float, float] = (0.0, 0.0),
                 events: EventWebhookPoster | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[SendRequest] = []
        self._refused: list[SendRequest] = []
        self._unavailable = threading.Event()
        self.events = events
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                arrived = time.time()
                if self.path != SEND_PATH:
                    self._answer(404)
                    return
                document = _document(body)
                key, order_id, to = _parse(document, self.headers)
                low, high = latency_seconds
                if high > 0:
                    time.sleep(random.uniform(low, high))
                if stub._unavailable.is_set():
                    stub._record(SendRequest(arrived, key, order_id, to), refused=True)
                    self._answer(503)
                    return
                message_id = f"bench-{uuid.uuid4().hex[:12]}"
                # Accepted here, whether or not the caller is still there to read the answer.
                stub._record(SendRequest(arrived, key, order_id, to))
                if stub.events is not None:
                    stub.events.processed(document, message_id)
                self._answer(202, {"X-Message-Id": message_id})

            def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the caller was killed while waiting: its answer is lost, as with SendGrid

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # base-class signature
                return  # one line per send on stderr would swamp the benchmark's output

        self._server = _ListeningServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sendgrid-stub", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.events is not None:
            self.events.stop()

    def unavailable(self, on: bool) -> None:
        """Answers 503 to every send while ``on`` (a provider outage); refused requests are not sends."""
        if on:
            self._unavailable.set()
        else:
            self._unavailable.clear()

    def _record(self, request: SendRequest, *, refused: bool = False) -> None:
        with self._lock:
            (self._refused if refused else self._requests).append(request)

    def refused(self, order_prefix: str = "") -> int:
        """Requests answered 503 (during `unavailable`) whose order id starts with ``order_prefix``."""
        with self._lock:
            return sum(r.order_id.startswith(order_prefix) for r in self._refused)

    def requests(self, order_prefix: str = "") -> list[SendRequest]:
        """Every accepted request whose order id starts with ``order_prefix``, oldest first."""
        with self._lock:
            return [r for r in self._requests if r.order_id.startswith(order_prefix)]

    def first_sends(self, order_prefix: str) -> dict[str, SendRequest]:
        """The first request for each order of the phase (each bench journey sends one email per order)."""
        first: dict[str, SendRequest] = {}
        for request in self.requests(order_prefix):
            first.setdefault(request.order_id, request)
        return first

    def keyed(self, key_prefix: str) -> list[SendRequest]:
        """Every accepted request whose idempotency key starts with ``key_prefix`` (a broadcast's
        ``broadcast:<id>:``), oldest first."""
        with self._lock:
            return [r for r in self._requests if r.idempotency_key.startswith(key_prefix)]

    def first_sends_by_key(self, key_prefix: str) -> dict[str, SendRequest]:
        """The first request for each idempotency key starting with ``key_prefix``."""
        first: dict[str, SendRequest] = {}
        for request in self.keyed(key_prefix):
            first.setdefault(request.idempotency_key, request)
        return first

    def duplicates_by_key(self, key_prefix: str) -> int:
        """Requests beyond the first, per idempotency key or per recipient address, whichever finds more.

        Counting by address as well catches a recipient sent to twice under two keys.
        """
        requests = self.keyed(key_prefix)
        by_key = Counter(r.idempotency_key for r in requests)
        by_address = Counter(r.to for r in requests)
        return max(sum(n - 1 for n in by_key.values()), sum(n - 1 for n in by_address.values()))

    def duplicates(self, order_prefix: str) -> int:
        """Requests beyond the first, per idempotency key or per order, whichever finds more.

        Counting by order as well catches a second send that carried a different key.
        """
        requests = self.requests(order_prefix)
        by_key = Counter(r.idempotency_key for r in requests)
        by_order = Counter(r.order_id for r in requests)
        return max(sum(n - 1 for n in by_key.values()), sum(n - 1 for n in by_order.values()))
