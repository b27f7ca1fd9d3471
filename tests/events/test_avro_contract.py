"""The schemas in avro/ keep their documented contract (see avro/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from events.schemas import NAMESPACE, load

AVRO = Path(__file__).resolve().parents[2] / "avro"
EVENT_TYPES = {"UserSignedUp", "CartUpdated", "CheckoutStarted", "PurchaseCompleted", "OrderShipped",
               "OrderRefunded", "SubscriptionChanged", "ProfileUpdated", "DeviceRegistered", "DeviceUnregistered"}


def _files() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(AVRO.glob("*.avsc"))}


def test_every_file_is_one_namespaced_documented_type_named_after_its_file() -> None:
    for name, schema in _files().items():
        assert name == f"{schema['namespace']}.{schema['name']}.avsc"
        assert schema["namespace"] == NAMESPACE
        assert schema.get("doc"), name
        for field in schema.get("fields", []):
            assert field.get("doc"), f"{name}: field {field['name']} has no doc"


def test_the_envelope_carries_every_event_type_and_its_logical_types() -> None:
    schemas = load()
    assert schemas.event_types == EVENT_TYPES
    envelope = _files()[f"{NAMESPACE}.CustomerEvent.avsc"]
    types = {f["name"]: f["type"] for f in envelope["fields"]}
    assert types["event_id"] == {"type": "string", "logicalType": "uuid"}
    assert types["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    money = {f["name"]: f["type"] for f in _files()[f"{NAMESPACE}.Money.avsc"]["fields"]}
    assert money["amount"]["logicalType"] == "decimal" and money["amount"]["scale"] == 2
    assert money["currency"] == "string"
    channel = _files()[f"{NAMESPACE}.SubscriptionChanged.avsc"]["fields"][0]["type"]
    assert set(channel["symbols"]) >= {"EMAIL", "SMS"}


def test_the_current_envelope_is_kept_in_history_and_reads_every_kept_version() -> None:
    from events.compat import check
    from events.schemas import history_name, read_history

    schemas = load()
    kept = read_history(AVRO)
    assert schemas.fingerprint in kept, f"run `eventflow schemas freeze` and commit avro/history/{history_name(schemas.fingerprint)}"
    for path, writer in kept.values():
        assert check(schemas.envelope, writer) == [], path.name
