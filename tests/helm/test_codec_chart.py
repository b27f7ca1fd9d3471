"""The chart's payload encryption: the keys Secret mounted as a file, the codec server, and what it refuses.

The rendered codec-server container is also run as a real ``eventflow codec-server`` process with
exactly its environment (the Secret's files and value supplied from a temporary folder).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from core.codec import EncryptionCodec, Keyring
from tests.helm.chart import ALL_ON, REPO, Rendered, RenderError, helm_template

KEYS_FILE = "/etc/eventflow/payload-keys/keys"


@pytest.fixture(scope="module")
def all_on(helm: Path) -> Rendered:
    return helm_template(helm, values_files=[ALL_ON])


def _pod(rendered: Rendered, component: str) -> dict[str, object]:
    spec: dict[str, object] = rendered.deployment(component)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("component", ["consumer", "worker", "codec-server"])
def test_the_keys_secret_is_mounted_as_the_keys_file(all_on: Rendered, component: str) -> None:
    env = all_on.env(component)
    assert env["EVENTFLOW_PAYLOAD_KEYS_FILE"]["value"] == KEYS_FILE
    assert env["EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID"]["value"] == "2026-12"
    assert env["EVENTFLOW_PAYLOAD_KEYS_REQUIRED"]["value"] == "true"
    assert "EVENTFLOW_PAYLOAD_KEYS" not in env, "the keys travel as a file, never as a plain value"
    mounts = {m["name"]: m for m in all_on.container(component)["volumeMounts"]}
    assert mounts["payload-keys"] == {"name": "payload-keys", "mountPath": "/etc/eventflow/payload-keys",
                                      "readOnly": True}
    volumes = {v["name"]: v for v in _pod(all_on, component)["volumes"]}  # type: ignore[attr-defined]
    assert volumes["payload-keys"]["secret"]["secretName"] == "eventflow-payload-keys"


def test_the_codec_server_is_locked_down_probed_and_served(all_on: Rendered) -> None:
    container = all_on.container("codec-server")
    worker = all_on.container("worker")
    assert container["args"] == ["codec-server"]
    assert container["securityContext"] == worker["securityContext"]
    assert _pod(all_on, "codec-server")["securityContext"] == _pod(all_on, "worker")["securityContext"]
    assert _pod(all_on, "codec-server")["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = all_on.env("codec-server")
    assert env["EVENTFLOW_CODEC_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "eventflow-codec-token", "key": "token"}
    assert env["EVENTFLOW_CODEC_SERVER_CORS_ORIGINS"]["value"] == "https://temporal-ui.example.com"
    service = all_on.one("Service", "-codec-server")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "codec-server"
    assert all_on.of_kind("Secret") == [], "the chart must not create Secrets"


def test_production_without_keys_is_refused_unless_plaintext_is_chosen(helm: Path) -> None:
    production = {"devMode": "false", "addressHashing.allowUnkeyed": "true"}
    with pytest.raises(RenderError, match="payloadEncryption.secretName is required outside devMode"):
        helm_template(helm, set_values=production)
    plaintext = helm_template(helm, set_values={**production, "payloadEncryption.allowPlaintext": "true"})
    assert not {"EVENTFLOW_PAYLOAD_KEYS_FILE", "EVENTFLOW_PAYLOAD_KEYS_REQUIRED"} & set(plaintext.env("worker"))
    trial = helm_template(helm)
    assert "EVENTFLOW_PAYLOAD_KEYS_REQUIRED" not in trial.env("consumer")
    assert not [m for m in trial.of_kind("Deployment") if m["metadata"]["name"].endswith("-codec-server")]


def test_the_codec_server_needs_keys_and_a_token_secret(helm: Path) -> None:
    with pytest.raises(RenderError, match="codecServer.enabled needs payloadEncryption.secretName"):
        helm_template(helm, set_values={"codecServer.enabled": "true"})
    with pytest.raises(RenderError, match="codecServer.token.secretName is required"):
        helm_template(helm, set_values={"codecServer.enabled": "true", "payloadEncryption.secretName": "k"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_rendered_codec_server_runs_and_decrypts_with_the_mounted_keys(
        all_on: Rendered, tmp_path: Path) -> None:
    old, new = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    keys = tmp_path / "keys"
    keys.write_text(f"2026-06={old}\n2026-12={new}\n")
    port = _free_port()
    token = "rendered-" + "t" * 32  # the server refuses a token under 32 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLOW_", "TEMPORAL_"))}
    for name, item in all_on.env("codec-server").items():
        env[name] = str(item["value"]) if "value" in item else token
    env.update({"EVENTFLOW_PAYLOAD_KEYS_FILE": str(keys), "EVENTFLOW_CACHE_DIR": str(tmp_path / "cache"),
                "EVENTFLOW_CODEC_SERVER_PORT": str(port), "PYTHONPATH": str(REPO)})
    [sealed] = await EncryptionCodec(Keyring.parse(keys.read_text(), "2026-06")).encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'"ada@example.com"')])
    process = subprocess.Popen([sys.executable, "-m", "eventflow.cli", "codec-server"], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    assert process.poll() is None, process.communicate()[0].decode()
                    await asyncio.sleep(0.1)
            body = json_format.MessageToJson(Payloads(payloads=[sealed]))
            async with http.post(f"http://127.0.0.1:{port}/decode", data=body,
                                 headers={"Authorization": f"Bearer {token}"}) as decoded:
                assert decoded.status == 200
                [plain] = json_format.ParseDict(await decoded.json(), Payloads()).payloads
            assert json.loads(plain.data) == "ada@example.com"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_address_hash_keys_are_mounted_into_every_process_that_hashes_and_required_outside_dev_mode(
        helm: Path, all_on: Rendered) -> None:
    for component in ("consumer", "worker", "webhooks"):
        env = all_on.env(component)
        assert env["EVENTFLOW_ADDRESS_HASH_KEYS_FILE"]["value"] == "/etc/eventflow/address-keys/keys", component
        assert env["EVENTFLOW_ADDRESS_HASH_KEY_ID"]["value"] == "2026-07"
        assert env["EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED"]["value"] == "true"
        mounts = {m["name"]: m for m in all_on.container(component)["volumeMounts"]}
        assert mounts["address-keys"]["mountPath"] == "/etc/eventflow/address-keys" and mounts["address-keys"]["readOnly"]
    production = {"devMode": "false", "payloadEncryption.allowPlaintext": "true"}
    with pytest.raises(RenderError, match="addressHashing.secretName is required outside devMode"):
        helm_template(helm, set_values=production)
    unkeyed = helm_template(helm, set_values={**production, "addressHashing.allowUnkeyed": "true"})
    assert not {"EVENTFLOW_ADDRESS_HASH_KEYS_FILE", "EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED"} & set(unkeyed.env("worker"))
    assert "EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED" not in helm_template(helm).env("consumer"), "the trial is unkeyed"

