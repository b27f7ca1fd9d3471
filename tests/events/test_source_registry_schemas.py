"""``eventflow journeys validate`` checks source journeys against a schema from the real registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from journeys.loader import validate_folder
from tests.events.shop import HERE, shop_journeys


def test_a_schema_named_by_registry_subject_is_fetched_and_checked(
        tmp_path: Path, apicurio: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    subject = f"orders-{unique}-value"
    SchemaRegistryClient({"url": apicurio}).register_schema(subject, Schema((HERE / "OrderPlaced.v2.avsc").read_text(),
                                                                           "AVRO"))
    root = shop_journeys(tmp_path / "journeys", "orders")
    sources = root / "sources.yaml"
    sources.write_text(sources.read_text().replace("{OrderPlaced: schemas/OrderPlaced.v1.avsc,",
                                                   f'{{"OrderPlaced": {{"subject": "{subject}"}},'))
    definition = root / "definitions" / "big_order.yaml"
    definition.write_text(definition.read_text().replace("payload.item_count >= 2", "payload.gift_wrap"))

    monkeypatch.delenv("EVENTFLOW_SCHEMA_REGISTRY_URL", raising=False)
    without = [str(p) for p in validate_folder(root).problems]
    assert without[0] == (f"{sources}:19: schema of OrderPlaced: registry subject {subject} needs "
                          "EVENTFLOW_SCHEMA_REGISTRY_URL"), without
    monkeypatch.setenv("EVENTFLOW_SCHEMA_REGISTRY_URL", apicurio)
    # v2 (the registry's latest) dropped gift_wrap, which the local v1 file still has.
    problems = [str(p) for p in validate_folder(root).problems]
    assert problems == [f"{definition}:5: expression 'payload.gift_wrap and payload.status == \"CONFIRMED\"': "
                        "payload has no field 'gift_wrap'"]
