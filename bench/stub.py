"""A local SendGrid-speaking server that counts and timestamps every send (``POST /v3/mail/send``).

It runs on its own threads (the standard library's threading HTTP server), so its timestamps do
not wait for the benchmark's event loop. Each request is recorded with the wall-clock time it
arrived, its idempotency key (SendGrid ``custom_args``, or the Eventflow header) and the order id
in the subject (the benchmark templates write ``bench order <order_id>``), and answered 202 the
way SendGrid does.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SEND_PATH = "/v3/mail/send"
IDEMPOTENCY_HEADER = "X-Eventflow-Idempotency-Key"


@dataclass(frozen=True)
class SendRequest:
    """One provider call as it arrived."""

    at_epoch_seconds: float
    idempotency_key: str
    order_id: str


def _parse(body: bytes, headers: Any) -> tuple[str, str]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        document = {}
    key = str((document.get("custom_args") or {}).get("idempotency_key") or headers.get(IDEMPOTENCY_HEADER) or "")
    subject = str(document.get("subject") or "")
    if not subject:
        for personalization in document.get("personalizations") or ():
            subject = str(personalization.get("subject") or "") or subject
    order_id = subject.rsplit(" ", 1)[-1] if subject.startswith("bench order ") else ""
    return key, order_id


class SendGridStub:
    """Counts sends at the provider: the only place a duplicate is certain to show."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[SendRequest] = []
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
                key, order_id = _parse(body, self.headers)
                stub._record(SendRequest(arrived, key, order_id))
                self._answer(202, {"X-Message-Id": f"bench-{uuid.uuid4().hex[:12]}"})

            def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # base-class signature
                return  # one line per send on stderr would swamp the benchmark's output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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

    def _record(self, request: SendRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, order_prefix: str = "") -> list[SendRequest]:
        """Every request whose order id starts with ``order_prefix``, oldest first."""
        with self._lock:
            return [r for r in self._requests if r.order_id.startswith(order_prefix)]

    def first_sends(self, order_prefix: str) -> dict[str, SendRequest]:
        """The first request for each order of the phase (each bench journey sends one email per order)."""
        first: dict[str, SendRequest] = {}
        for request in self.requests(order_prefix):
            first.setdefault(request.order_id, request)
        return first

    def duplicates(self, order_prefix: str) -> int:
        """Requests beyond the first, per idempotency key or per order, whichever finds more.

        Counting by order as well catches a second send that carried a different key.
        """
        requests = self.requests(order_prefix)
        by_key = Counter(r.idempotency_key for r in requests)
        by_order = Counter(r.order_id for r in requests)
        return max(sum(n - 1 for n in by_key.values()), sum(n - 1 for n in by_order.values()))
