"""A scriptable Confluent-compatible Schema Registry speaking the REST subset the Python client uses.

The registry paths are tested against a real Apicurio Registry (the ``apicurio`` fixture); this
server is for what a real one cannot be made to do on demand: fail with a given status, demand
basic auth, and count the requests it gets (the decoder must ask once per schema id). It keeps schemas in memory, gives ids globally (the same schema text gets the same id in every
subject), enforces the subject's compatibility level on registration (default BACKWARD, as
Confluent does) with `events.compat`, and can be told to fail (``fail_with``) or require basic auth.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from fastavro import parse_schema

from events.compat import check_level


@dataclass
class _State:
    schemas: dict[int, dict[str, object]] = field(default_factory=dict)
    ids_by_text: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    compatibility: dict[str, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    fail_status: int | None = None
    credentials: str | None = None


class LocalRegistry:
    """The server; ``url`` is its base URL. Start with `start`, stop with `stop`."""

    def __init__(self, *, username: str | None = None, password: str | None = None) -> None:
        self.state = _State()
        if username is not None:
            self.state.credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        state = self.state

        class Handler(_Handler):
            registry_state = state

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-registry", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_with(self, status: int | None) -> None:
        """Answer every request with ``status`` (None: answer normally again)."""
        self.state.fail_status = status

    def schema_fetches(self, schema_id: int) -> int:
        """How often ``GET /schemas/ids/<id>`` was asked."""
        return self.state.requests[f"GET /schemas/ids/{schema_id}"]


class _Handler(BaseHTTPRequestHandler):
    registry_state: _State

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests assert on `LocalRegistry.state.requests` instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._reply(status, {"error_code": code, "message": message})

    def _dispatch(self, method: str) -> None:
        state = self.registry_state
        path = urlsplit(self.path).path
        state.requests[f"{method} {path}"] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if state.fail_status is not None:
            self._error(state.fail_status, state.fail_status * 100, "injected failure")
            return
        if state.credentials and self.headers.get("Authorization") != f"Basic {state.credentials}":
            self._error(401, 40101, "Unauthorized")
            return
        for pattern, handler_method, handler in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match and handler_method == method:
                handler(self, state, body, *(unquote(g) for g in match.groups()))
                return
        self._error(404, 404, f"no route {method} {path}")

    # --- routes -----------------------------------------------------------------------------------

    def get_schema(self, state: _State, _: object, schema_id: str) -> None:
        schema = state.schemas.get(int(schema_id))
        if schema is None:
            self._error(404, 40403, "Schema not found")
            return
        self._reply(200, {"schema": schema["schema"], "schemaType": "AVRO", "references": []})

    def register(self, state: _State, body: dict[str, object], subject: str) -> None:
        text = str(body["schema"])
        versions = state.subjects.get(subject, [])
        existing = state.ids_by_text.get(text)
        if existing is not None and existing in versions:
            self._reply(200, {"id": existing})
            return
        if versions:
            problems = self._problems(state, subject, text, versions[-1])
            if problems:
                self._error(409, 409, "Schema being registered is incompatible with an earlier schema: "
                            + "; ".join(problems))
                return
        schema_id = existing if existing is not None else len(state.schemas) + 1
        state.schemas[schema_id] = {"schema": text}
        state.ids_by_text[text] = schema_id
        state.subjects.setdefault(subject, []).append(schema_id)
        self._reply(200, {"id": schema_id})

    def lookup(self, state: _State, body: dict[str, object], subject: str) -> None:
        versions = state.subjects.get(subject)
        if versions is None:
            self._error(404, 40401, f"Subject '{subject}' not found.")
            return
        schema_id = state.ids_by_text.get(str(body["schema"]))
        if schema_id not in versions:
            self._error(404, 40403, "Schema not found")
            return
        self._reply(200, self._version_body(state, subject, versions.index(schema_id) + 1))

    def get_version(self, state: _State, _: object, subject: str, version: str) -> None:
        versions = state.subjects.get(subject)
        if versions is None:
            self._error(404, 40401, f"Subject '{subject}' not found.")
            return
        number = len(versions) if version in ("latest", "-1") else int(version)
        if not 1 <= number <= len(versions):
            self._error(404, 40402, "Version not found.")
            return
        self._reply(200, self._version_body(state, subject, number))

    def list_versions(self, state: _State, _: object, subject: str) -> None:
        versions = state.subjects.get(subject)
        if versions is None:
            self._error(404, 40401, f"Subject '{subject}' not found.")
            return
        self._reply(200, list(range(1, len(versions) + 1)))

    def list_subjects(self, state: _State, _: object) -> None:
        self._reply(200, sorted(state.subjects))

    def test_compatibility(self, state: _State, body: dict[str, object], subject: str, version: str) -> None:
        versions = state.subjects.get(subject)
        if not versions:
            self._error(404, 40401, f"Subject '{subject}' not found.")
            return
        number = len(versions) if version == "latest" else int(version)
        problems = self._problems(state, subject, str(body["schema"]), versions[number - 1])
        self._reply(200, {"is_compatible": not problems, "messages": problems})

    def put_config(self, state: _State, body: dict[str, object], subject: str) -> None:
        state.compatibility[subject] = str(body["compatibility"]).upper()
        self._reply(200, {"compatibility": state.compatibility[subject]})

    def get_config(self, state: _State, _: object, subject: str) -> None:
        self._reply(200, {"compatibilityLevel": state.compatibility.get(subject, "BACKWARD")})

    @staticmethod
    def _version_body(state: _State, subject: str, number: int) -> dict[str, object]:
        schema_id = state.subjects[subject][number - 1]
        return {"subject": subject, "version": number, "id": schema_id, "schema": state.schemas[schema_id]["schema"]}

    @staticmethod
    def _problems(state: _State, subject: str, text: str, previous_id: int) -> list[str]:
        level = state.compatibility.get(subject, "BACKWARD").lower().removesuffix("_transitive")
        if level == "none":
            return []
        new = parse_schema(json.loads(text), named_schemas={})
        old = parse_schema(json.loads(str(state.schemas[previous_id]["schema"])), named_schemas={})
        return [str(p) for p in check_level(new, old, level)]  # type: ignore[arg-type]  # level checked above


_ROUTES: list[tuple[str, str, Callable[..., None]]] = [
    (r"/schemas/ids/(\d+)", "GET", _Handler.get_schema),
    (r"/subjects/([^/]+)/versions", "POST", _Handler.register),
    (r"/subjects/([^/]+)", "POST", _Handler.lookup),
    (r"/subjects/([^/]+)/versions/([^/]+)", "GET", _Handler.get_version),
    (r"/subjects/([^/]+)/versions", "GET", _Handler.list_versions),
    (r"/subjects", "GET", _Handler.list_subjects),
    (r"/compatibility/subjects/([^/]+)/versions/([^/]+)", "POST", _Handler.test_compatibility),
    (r"/config/([^/]+)", "PUT", _Handler.put_config),
    (r"/config/([^/]+)", "GET", _Handler.get_config),
]
