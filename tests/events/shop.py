"""The shop's journeys folder used by the event-source tests: a source file, schemas, journeys, templates."""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "sources"


def shop_journeys(root: Path, topic: str) -> Path:
    """A journeys folder with the shop's source file, schemas, two journeys and their templates."""
    for folder in ("definitions", "templates", "schemas"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in ("big_order", "shipped"):
        shutil.copy(HERE / f"{name}.yaml", root / "definitions" / f"{name}.yaml")
    for name in ("order_received", "shipment_on_its_way"):
        shutil.copy(HERE / f"{name}.yaml", root / "templates" / f"{name}.yaml")
    for schema in HERE.glob("*.avsc"):
        shutil.copy(schema, root / "schemas" / schema.name)
    (root / "sources.yaml").write_text((HERE / "sources.yaml").read_text().replace("TOPIC", topic))
    return root
