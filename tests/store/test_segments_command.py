"""`eventflow segments` against the real store: list the definitions, preview without changing anything."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from eventflow.cli import main
from store import CustomerStore, FieldCipher
from store.customers import ProfileWrite
from workflows.profile import ProfileUpdate


async def test_list_show_and_preview(store_pool: asyncpg.Pool, store_dsn: str, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = CustomerStore(store_pool, FieldCipher(None))
    gold = [f"gold-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    when = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    await store.apply_profile_updates([ProfileWrite(c, ProfileUpdate(uuid.uuid4().hex, when, attributes={"tier": "gold"}))
                                       for c in gold])
    await store.apply_profile_updates([ProfileWrite("plain-1", ProfileUpdate("p-1", when, attributes={"tier": "bronze"}))])
    monkeypatch.setenv("EVENTFLOW_DATABASE_URL", store_dsn)

    assert await asyncio.to_thread(main, ["segments", "list"]) == 0
    listed = capsys.readouterr().out
    assert "lapsed_gold v1" in listed and "repeat_buyers v1" in listed and "PurchaseCompleted" in listed
    assert await asyncio.to_thread(main, ["segments", "show", "lapsed_gold"]) == 0
    assert "attributes.tier" in capsys.readouterr().out

    # Nobody bought anything: every gold customer is lapsed; the bronze one is not.
    members_before = await store_pool.fetchval("SELECT count(*) FROM eventflow.segment_members")
    assert await asyncio.to_thread(main, ["segments", "preview", "lapsed_gold", "--json"]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview["members"] == 3 and preview["customers"] == 4 and not preview["matches_everyone"]
    assert sorted(preview["sample"]) == sorted(gold)
    assert await store_pool.fetchval("SELECT count(*) FROM eventflow.segment_members") == members_before

    assert await asyncio.to_thread(main, ["segments", "preview", "no_such_segment"]) != 0
    assert "'no_such_segment' is not defined" in capsys.readouterr().err
