"""The payload codec and its keys: round trip, rotation, tampering, pass-through, and the settings' checks."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload

from core.codec import (
    AAD_VERSION_METADATA,
    CIPHER_METADATA,
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    Keyring,
    KeyringError,
    PayloadDecryptionError,
    data_converter,
)
from core.errors import ConfigError
from core.payloads import PayloadConverter
from core.settings import CodecServerSettings, TemporalSettings
from eventflow.settings import load_codec_server


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


OLD, NEW = new_key(), new_key()
TOKEN = "0123456789abcdef0123456789abcdef"  # the shortest the codec server accepts
EMAIL = b'{"email": "ada@example.com", "phone": "+15557654321"}'


def _json_payload(data: bytes = EMAIL) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


@given(metadata=st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=40), max_size=5),
       data=st.binary(max_size=2000))
async def test_any_payload_round_trips_and_its_bytes_never_show(metadata: dict[str, bytes], data: bytes) -> None:
    codec = EncryptionCodec(Keyring.parse(f"k1={OLD}"))
    payload = Payload(metadata=metadata, data=data)

    [encrypted] = await codec.encode([payload])
    [decrypted] = await codec.decode([encrypted])

    assert decrypted == payload
    assert encrypted.metadata["encoding"] == ENCODING and encrypted.metadata[KEY_ID_METADATA] == b"k1"
    if len(data) >= 8:
        assert data not in encrypted.data


async def test_rotation_old_key_still_decrypts_new_key_encrypts_and_a_retired_key_is_named() -> None:
    before = EncryptionCodec(Keyring.parse(f"2026-01={OLD}"))
    rotated = EncryptionCodec(Keyring.parse(f"2026-01={OLD}\n2026-12={NEW}", "2026-12"))
    retired = EncryptionCodec(Keyring.parse(f"2026-12={NEW}"))
    [old] = await before.encode([_json_payload()])

    [new] = await rotated.encode([_json_payload()])

    assert (await rotated.decode([old]))[0].data == EMAIL
    assert new.metadata[KEY_ID_METADATA] == b"2026-12"
    assert (await retired.decode([new]))[0].data == EMAIL
    with pytest.raises(PayloadDecryptionError, match="2026-01.*unknown key id") as raised:
        await retired.decode([old])
    assert raised.value.key_id == "2026-01"


async def test_tampered_ciphertext_or_swapped_key_id_is_a_clear_error() -> None:
    codec = EncryptionCodec(Keyring.parse(f"a={OLD},b={NEW}", "a"))
    [sealed] = await codec.encode([_json_payload()])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    swapped = Payload(metadata={**sealed.metadata, KEY_ID_METADATA: b"b"}, data=sealed.data)
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:5])

    for bad, reason in ((tampered, "authentication failed"), (swapped, "authentication failed"),
                        (truncated, "malformed")):
        with pytest.raises(PayloadDecryptionError, match=reason):
            await codec.decode([bad])


async def test_payloads_written_before_encryption_pass_through() -> None:
    codec = EncryptionCodec(Keyring.parse(f"k={OLD}"))
    plain = [_json_payload(), Payload(metadata={"encoding": b"binary/null"})]

    assert await codec.decode(plain) == plain


def test_without_keys_nothing_is_encrypted_and_with_keys_failures_are_encoded() -> None:
    plain = data_converter(None)
    assert plain.payload_codec is None
    assert plain.payload_converter_class is PayloadConverter
    converter = data_converter(Keyring.parse(f"k={OLD}"))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert getattr(converter.failure_converter, "_encode_common_attributes") is True  # noqa: B009 - a private SDK attribute, not in its stubs


@pytest.mark.parametrize(("text", "problem"), [
    ("k=not*base64", "'k' is not valid base64"),
    (f"k={base64.b64encode(os.urandom(16)).decode()}", "'k' is 16 bytes; AES-256 needs 32"),
    (f"a={OLD},b={NEW}", "2 keys but no encrypt key id"),
    (f"k={OLD},k={NEW}", "'k' appears twice"),
    (f"{OLD}", "item 1 is not id=base64key"),
    (f"bad id={OLD}", "item 1 is not id=base64key"),
    ("", "lists no key"),
])
def test_bad_keys_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(KeyringError) as refused:
        Keyring.parse(text)
    assert problem in str(refused.value)
    assert OLD not in str(refused.value) and OLD.rstrip("=") not in str(refused.value)


def test_settings_name_the_variable_and_never_show_a_key() -> None:
    with pytest.raises(ConfigError) as bad:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS": "k=c2hvcnQ="})
    assert bad.value.variable == "EVENTFLOW_PAYLOAD_KEYS" and "c2hvcnQ" not in str(bad.value)
    with pytest.raises(ConfigError) as missing:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS": f"k={OLD}",
                               "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID": "other"})
    assert missing.value.variable == "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID" and "not among the keys" in str(missing.value)
    with pytest.raises(ConfigError) as unchosen:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS": f"a={OLD},b={NEW}"})
    assert unchosen.value.variable == "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID"
    with pytest.raises(ConfigError) as lonely:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID": "a"})
    assert lonely.value.variable == "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID"
    with pytest.raises(ConfigError) as required:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS_REQUIRED": "true"})
    assert required.value.variable == "EVENTFLOW_PAYLOAD_KEYS"
    assert TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233"}).payload_keyring() is None


def test_keys_come_from_a_mounted_file_that_wins_over_the_variable(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated 2026-12\nold={OLD}\nnew={NEW}\n")
    settings = TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS": f"env={OLD}",
                                      "EVENTFLOW_PAYLOAD_KEYS_FILE": str(keys),
                                      "EVENTFLOW_PAYLOAD_ENCRYPT_KEY_ID": "new"})

    keyring = settings.payload_keyring()

    assert keyring is not None and set(keyring.keys) == {"old", "new"} and keyring.encrypt_key_id == "new"
    with pytest.raises(ConfigError) as unreadable:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS_FILE": str(tmp_path / "none")})
    assert unreadable.value.variable == "EVENTFLOW_PAYLOAD_KEYS_FILE"
    keys.write_text("new=???")
    with pytest.raises(ConfigError) as bad_file:
        TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "EVENTFLOW_PAYLOAD_KEYS_FILE": str(keys)})
    assert bad_file.value.variable == "EVENTFLOW_PAYLOAD_KEYS_FILE"


def test_the_codec_server_needs_keys_and_a_token() -> None:
    with pytest.raises(ConfigError) as no_keys:
        load_codec_server({"EVENTFLOW_CODEC_SERVER_TOKEN": TOKEN})
    assert no_keys.value.variable == "EVENTFLOW_PAYLOAD_KEYS"
    with pytest.raises(ConfigError) as no_token:
        load_codec_server({"EVENTFLOW_PAYLOAD_KEYS": f"k={OLD}"})
    assert no_token.value.variable == "EVENTFLOW_CODEC_SERVER_TOKEN"
    loaded = load_codec_server({"EVENTFLOW_PAYLOAD_KEYS": f"k={OLD}", "EVENTFLOW_CODEC_SERVER_TOKEN": TOKEN,
                                "EVENTFLOW_CODEC_SERVER_CORS_ORIGINS": "https://ui.example.com,http://localhost:8233"})
    assert loaded.server.cors_origins == ("https://ui.example.com", "http://localhost:8233")
    assert loaded.server.token == SecretStr(TOKEN) and CodecServerSettings.variable("port") == "EVENTFLOW_CODEC_SERVER_PORT"


@pytest.mark.parametrize("command", ["worker", "consume", "codec-server", "temporal setup"])
def test_every_process_refuses_to_start_on_a_bad_key_naming_the_variable(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from eventflow.cli import main

    monkeypatch.setenv("EVENTFLOW_PAYLOAD_KEYS", f"k={base64.b64encode(os.urandom(31)).decode()}")
    monkeypatch.setenv("EVENTFLOW_CODEC_SERVER_TOKEN", TOKEN)

    assert main(command.split()) == 2
    assert capsys.readouterr().err.startswith("eventflow: EVENTFLOW_PAYLOAD_KEYS: key 'k' is 31 bytes")


def test_the_codec_server_refuses_a_short_token_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as short:
        load_codec_server({"EVENTFLOW_PAYLOAD_KEYS": f"k={OLD}", "EVENTFLOW_CODEC_SERVER_TOKEN": TOKEN[:-1]})
    assert short.value.variable == "EVENTFLOW_CODEC_SERVER_TOKEN" and "32 characters" in str(short.value)
    assert TOKEN[:-1] not in str(short.value)
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    with pytest.raises(ConfigError) as short_file:
        load_codec_server({"EVENTFLOW_PAYLOAD_KEYS": f"k={OLD}", "EVENTFLOW_CODEC_SERVER_TOKEN_FILE": str(token_file)})
    assert short_file.value.variable == "EVENTFLOW_CODEC_SERVER_TOKEN_FILE"


async def test_the_associated_data_binds_every_metadata_field_not_only_the_key_id() -> None:
    codec = EncryptionCodec(Keyring.parse(f"a={OLD}"))
    [sealed] = await codec.encode([_json_payload()])
    assert sealed.metadata[AAD_VERSION_METADATA] == b"2"

    stripped = {k: v for k, v in sealed.metadata.items() if k != AAD_VERSION_METADATA}  # a downgrade to the old form
    for metadata in (stripped, {**sealed.metadata, CIPHER_METADATA: b"AES128-GCM"}):
        with pytest.raises(PayloadDecryptionError, match="authentication failed"):
            await codec.decode([Payload(metadata=metadata, data=sealed.data)])
    with pytest.raises(PayloadDecryptionError, match="malformed"):
        await codec.decode([Payload(metadata={**sealed.metadata, AAD_VERSION_METADATA: b"9"}, data=sealed.data)])


async def test_a_payload_sealed_with_the_key_id_alone_still_decrypts() -> None:
    """The form every payload had before the associated-data version: histories written then replay."""
    nonce = os.urandom(12)
    plain = _json_payload()
    old_form = Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"a", CIPHER_METADATA: b"AES256-GCM"},
                       data=nonce + AESGCM(base64.b64decode(OLD)).encrypt(nonce, plain.SerializeToString(), b"a"))

    assert await EncryptionCodec(Keyring.parse(f"a={OLD}")).decode([old_form]) == [plain]
