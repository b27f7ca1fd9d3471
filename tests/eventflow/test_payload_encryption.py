"""Contact details never reach Temporal in clear, and operators read them through `eventflow codec-server`.

A journey runs on the real Temporal server through a client built by `connect` with payload keys;
its SMS fails with the number in the provider's error, then it falls back to email. Its raw history,
read by a client without the codec, holds neither the address nor the number in any payload (each
payload's data and metadata decoded and searched) nor in any failure text. The dev stack's Temporal
CLI, pointed at a running codec server whose keys were rotated since (the old key only decrypts),
shows both, and the failure's message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from core.codec import EncryptionCodec, Keyring, data_converter
from core.settings import TemporalSettings
from core.temporal_client import connect
from devstack import Endpoints
from devstack.provision import temporal_cli
from eventflow.codec_server import CodecServer
from tests.activities.journey_support import channels_for, event, journey, run_journey, send, worker
from tests.activities.provider_stub import ProviderStub, Reply, provider
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus, JourneyWorkflow
from workflows.preferences import preferences_workflow_id

__all__ = ["provider"]

EMAIL, PHONE = "ada@example.com", "+15557654321"
TOKEN = "codec-test-token"
UI_ORIGIN = "http://localhost:8233"
OLD_KEY, NEW_KEY = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
HISTORIES = Path(__file__).resolve().parents[1] / "workflows" / "histories"


def _bad_number() -> Reply:
    # Twilio-shaped refusal that repeats the number, as a provider error message may.
    return Reply(400, {"code": 21211, "message": f"The 'To' number {PHONE} is not a valid phone number.",
                       "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})


def _payloads(node: Any) -> Iterator[dict[str, Any]]:
    """Every Payload in a history's JSON (an object with ``data`` or ``metadata``), at any depth."""
    match node:
        case {"metadata": dict()}:
            yield node
            yield from (p for value in node.values() for p in _payloads(value))
        case dict():
            yield from (p for value in node.values() for p in _payloads(value))
        case list():
            yield from (p for item in node for p in _payloads(item))


def _readable(history_json: str) -> str:
    """The history's JSON with every payload's data and metadata values base64-decoded, as one text."""
    document = json.loads(history_json)
    decoded = [base64.b64decode(p.get("data", "")).decode(errors="replace") for p in _payloads(document)]
    decoded += [base64.b64decode(v).decode(errors="replace") for p in _payloads(document)
                for v in p["metadata"].values()]
    return "\n".join([history_json, *decoded])


async def _decrypted(history_json: str, codec: EncryptionCodec) -> str:
    """The same text after decrypting every payload: proves the search finds what is there."""
    document = json.loads(history_json)
    found = [json_format.ParseDict(p, Payload()) for p in _payloads(document)]
    plain = await codec.decode(found)
    return "\n".join(p.data.decode(errors="replace") for p in plain)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.parse(f"k1={OLD_KEY}")


@pytest.fixture
async def codec_server() -> AsyncIterator[CodecServer]:
    # Already rotated: the journeys' k1 only decrypts, k2 encrypts.
    rotated = Keyring.parse(f"k1={OLD_KEY}\nk2={NEW_KEY}", "k2")
    server = CodecServer(EncryptionCodec(rotated), token=TOKEN, namespace="default", cors_origins=[UI_ORIGIN],
                         max_body_bytes=64 * 1024, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_history_without_the_codec_holds_no_contact_details_and_the_cli_with_the_codec_server_shows_them(
        endpoints: Endpoints, provider: ProviderStub, codec_server: CodecServer,
        keyring: Keyring, unique: str) -> None:
    encrypting = await connect(TemporalSettings(address=endpoints.temporal_address,
                                                payload_keys=SecretStr(f"k1={OLD_KEY}")))
    provider.reply(_bad_number())
    queue, workflow_id = f"q-{unique}", f"journey:codec:{unique}"
    async with worker(encrypting, queue, channels_for(provider.base_url)):
        status = await run_journey(encrypting, queue, journey([send("nudge", "sms", fallback="email")]),
                                   event(f"c-{unique}", phone=PHONE), workflow_id)
    assert [(s.channel, s.status) for s in status.sends] == [("email", "sent")]
    assert provider.sends()[0].body["To"] == PHONE  # the provider got the number in clear

    plain_client = await Client.connect(endpoints.temporal_address)  # no codec: what Temporal stores
    raw = (await plain_client.get_workflow_handle(workflow_id).fetch_history()).to_json()
    readable = _readable(raw)
    assert EMAIL not in readable and PHONE not in readable and PHONE.lstrip("+") not in readable
    assert "ActivityTaskFailed" in raw or "activityTaskFailedEventAttributes" in raw
    assert "Encoded failure" in readable and "not a valid phone number" not in readable
    decrypted = await _decrypted(raw, EncryptionCodec(keyring))
    assert EMAIL in decrypted and PHONE in decrypted and "not a valid phone number" in decrypted
    ledger = await plain_client.get_workflow_handle(preferences_workflow_id(f"c-{unique}")).fetch_history()
    assert EMAIL not in _readable(ledger.to_json()) and PHONE not in _readable(ledger.to_json())

    base = ["workflow", "show", "--workflow-id", workflow_id, "--address", endpoints.temporal_address,
            "--namespace", "default", "--output", "json"]
    endpoint = f"http://127.0.0.1:{codec_server.port}"
    code, shown = await _cli(*base, "--codec-endpoint", endpoint, "--codec-auth", f"Bearer {TOKEN}")
    assert code == 0, shown
    assert EMAIL in _readable(shown) and PHONE in _readable(shown)
    assert "not a valid phone number" in _readable(shown), "the failure's encoded message is decoded too"
    code, refused = await _cli(*base, "--codec-endpoint", endpoint, "--codec-auth", "Bearer wrong",
                               "--command-timeout", "3s")  # the CLI retries a refusal until its deadline
    assert code != 0 and EMAIL not in refused


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(str(temporal_cli()), *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


async def test_a_journey_started_before_encryption_finishes_on_an_encrypting_worker(
        endpoints: Endpoints, provider: ProviderStub, unique: str) -> None:
    plain = await Client.connect(endpoints.temporal_address)
    queue, workflow_id = f"q-{unique}", f"journey:switch:{unique}"
    await plain.start_workflow(JOURNEY_WORKFLOW, JourneyInput(journey([send("thank_you", "email")]),
                                                              event(f"c-{unique}")), id=workflow_id, task_queue=queue)
    encrypting = await connect(TemporalSettings(address=endpoints.temporal_address,
                                                payload_keys=SecretStr(f"k1={OLD_KEY}")))

    async with worker(encrypting, queue, channels_for(provider.base_url)):
        status = await encrypting.get_workflow_handle(workflow_id, result_type=JourneyStatus).result()

    assert [(s.channel, s.status) for s in status.sends] == [("email", "sent")]
    assert [r.body["personalizations"][0]["to"][0]["email"] for r in provider.sends()] == [EMAIL]
    events = json.loads((await plain.get_workflow_handle(workflow_id).fetch_history()).to_json())["events"]
    encodings = [base64.b64decode(p["metadata"]["encoding"]) for e in events for p in _payloads(e)
                 if "encoding" in p["metadata"]]
    assert encodings[0] == b"json/plain", "the start was written in clear, before the switch"
    assert b"binary/encrypted" in encodings[1:], "what the encrypting worker wrote is encrypted"


async def test_recorded_plain_histories_still_replay_with_encryption_on(keyring: Keyring) -> None:
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=data_converter(keyring))
    paths = sorted(HISTORIES.glob("post_purchase-*.json"))[:2]
    assert paths
    for path in paths:
        result = await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
        assert result.replay_failure is None


def _body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=list(payloads)))


async def test_codec_server_decodes_what_was_encoded_and_refuses_without_the_token(
        codec_server: CodecServer) -> None:
    url = f"http://127.0.0.1:{codec_server.port}"
    plain = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"email": EMAIL}).encode())
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/encode", data=_body(plain), headers=auth) as encoded:
            assert encoded.status == 200
            sealed = json_format.ParseDict(await encoded.json(), Payloads())
        assert EMAIL.encode() not in sealed.SerializeToString()
        assert sealed.payloads[0].metadata["encryption-key-id"] == b"k2"
        async with http.post(f"{url}/default/decode", data=json_format.MessageToJson(sealed), headers=auth) as decoded:
            assert decoded.status == 200
            assert json_format.ParseDict(await decoded.json(), Payloads()).payloads[0] == plain

        async with http.post(f"{url}/decode", data=_body(plain)) as missing:
            assert missing.status == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
        async with http.post(f"{url}/decode", data=_body(plain), headers={"Authorization": "Bearer nope"}) as wrong:
            assert wrong.status == 403
        async with http.post(f"{url}/decode", data=_body(plain), headers={**auth, "X-Namespace": "other"}) as other:
            assert other.status == 403

        flipped = Payload(metadata=dict(sealed.payloads[0].metadata), data=sealed.payloads[0].data[:-1] + b"\0")
        async with http.post(f"{url}/decode", data=_body(flipped), headers=auth) as tampered:
            assert tampered.status == 400 and "authentication failed" in (await tampered.json())["error"]
        async with http.post(f"{url}/decode", data="x" * (65 * 1024), headers=auth) as huge:
            assert huge.status == 413
        async with http.post(f"{url}/decode", data="not json", headers=auth) as garbage:
            assert garbage.status == 400
        async with http.get(f"{url}/healthz") as health:
            assert health.status == 200


async def test_codec_server_answers_the_web_ui_preflight_and_only_its_origin(codec_server: CodecServer) -> None:
    url = f"http://127.0.0.1:{codec_server.port}/decode"
    preflight = {"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}
    async with aiohttp.ClientSession() as http:
        async with http.options(url, headers=preflight) as allowed:
            assert allowed.status == 204
            assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
            assert {"authorization", "x-namespace"} <= {
                h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")}
        async with http.options(url, headers={**preflight, "Origin": "https://evil.example"}) as foreign:
            assert foreign.status == 403 and "Access-Control-Allow-Origin" not in foreign.headers
        async with http.post(url, data="{}", headers={"Origin": UI_ORIGIN}) as unauthorised:
            assert unauthorised.status == 401  # the browser can read the refusal
            assert unauthorised.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
