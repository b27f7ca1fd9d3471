"""Address hashes are keyed: not recomputable without the key, and a key rotation keeps every lookup."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activities.addresses import AddressHasher, address_hasher, hash_key_id, normalise_address, unkeyed_address_hash
from core.errors import ConfigError
from core.settings import AddressHashSettings
from core.signing import SigningKeys

KEY_BYTES = st.binary(min_size=32, max_size=48)
ADDRESSES = st.one_of(
    st.emails().map(lambda e: ("email", e)),
    st.from_regex(r"\+49151[0-9]{7,8}", fullmatch=True).map(lambda n: ("sms", n)),
    st.from_regex(r"whatsapp:\+1415[0-9]{7}", fullmatch=True).map(lambda n: ("whatsapp", n)),
)


def _keys(current: str, **keys: bytes) -> SigningKeys:
    return SigningKeys(dict(keys), current)


@given(ADDRESSES, KEY_BYTES, KEY_BYTES)
def test_a_keyed_hash_cannot_be_recomputed_without_its_key(address: tuple[str, str], key: bytes,
                                                           guess: bytes) -> None:
    channel, text = address
    hashed = AddressHasher(_keys("k1", k1=key)).hash(channel, text)
    assert hash_key_id(hashed) == "k1", "the value names its key id"
    # What someone holding the address but not the key can compute: the unkeyed forms, plain
    # SHA-256 of the normalised address, and the keyed form under any other key.
    normalised = normalise_address(channel, text)
    assert hashed.partition(":")[2] not in (unkeyed_address_hash(channel, text),
                                            hashlib.sha256(normalised.encode()).hexdigest()[:32])
    if guess != key:
        assert AddressHasher(_keys("k1", k1=guess)).hash(channel, text) != hashed
    assert AddressHasher(_keys("k1", k1=key)).hash(channel, text) == hashed, "stable under its key"


@given(ADDRESSES, KEY_BYTES, KEY_BYTES)
def test_a_rotation_keeps_every_lookup(address: tuple[str, str], old_key: bytes, new_key: bytes) -> None:
    channel, text = address
    before = AddressHasher(None)  # the unkeyed values written before keys were configured
    first = AddressHasher(_keys("2026-01", **{"2026-01": old_key}))
    rotated = AddressHasher(_keys("2026-07", **{"2026-01": old_key, "2026-07": new_key}))
    legacy, old, new = before.hash(channel, text), first.hash(channel, text), rotated.hash(channel, text)
    forms = rotated.forms(channel, text)
    assert forms[0] == new, "the current key writes"
    assert {legacy, old, new} <= set(forms), "every stored form is looked up"
    assert hash_key_id(new) == "2026-07" and hash_key_id(old) == "2026-01" and hash_key_id(legacy) is None
    no_legacy = AddressHasher(_keys("2026-07", **{"2026-01": old_key, "2026-07": new_key}), legacy_reads=False)
    assert legacy not in no_legacy.forms(channel, text), "legacy reads can be turned off"


def test_no_address_has_no_hash_and_no_forms() -> None:
    hasher = AddressHasher(_keys("k", k=bytes(32)))
    assert hasher.hash("email", "  ") == "" and hasher.forms("email", "") == ()


def test_settings_read_keys_from_a_file_and_name_the_variable_on_errors(tmp_path: Path) -> None:
    key, other = (base64.b64encode(bytes(range(start, start + 32))).decode() for start in (0, 50))
    path = tmp_path / "keys"
    path.write_text(f"a={key}\nb={other}\n")
    settings = AddressHashSettings.load({"EVENTFLOW_ADDRESS_HASH_KEYS_FILE": str(path),
                                         "EVENTFLOW_ADDRESS_HASH_KEY_ID": "b"})
    assert hash_key_id(address_hasher(settings).hash("email", "ada@example.com")) == "b"
    with pytest.raises(ConfigError, match="EVENTFLOW_ADDRESS_HASH_KEY_ID"):
        AddressHashSettings.load({"EVENTFLOW_ADDRESS_HASH_KEYS": f"a={key},b={key}"})
    with pytest.raises(ConfigError, match="EVENTFLOW_ADDRESS_HASH_KEYS"):
        AddressHashSettings.load({"EVENTFLOW_ADDRESS_HASH_KEYS": "a=c2hvcnQ="})
    with pytest.raises(ConfigError, match="EVENTFLOW_ADDRESS_HASH_KEYS.*required"):
        AddressHashSettings.load({"EVENTFLOW_ADDRESS_HASH_KEYS_REQUIRED": "true"})
    assert not address_hasher(AddressHashSettings.load({})).keyed
