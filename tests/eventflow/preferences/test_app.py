"""The preference center over HTTP: pages, single-use forms, refusals that reveal nothing, the JSON API."""

from __future__ import annotations

import re

import aiohttp
import asyncpg

from core.preference_links import PreferenceLinks
from core.vocabulary import CHANNELS
from eventflow.preferences.app import PreferenceCenter
from store.consent import ConsentStore
from tests.eventflow.preferences.conftest import API_TOKEN, KEYS, Clock, add_customer


def _url(center: PreferenceCenter, path: str) -> str:
    return f"http://127.0.0.1:{center.port}{path}"


def _form_token(page: str) -> str:
    match = re.search(r'name="form" value="([^"]+)"', page)
    assert match is not None, page
    return match.group(1)


async def test_the_page_speaks_the_customers_language_and_a_form_is_accepted_once(
        center: PreferenceCenter, store_pool: asyncpg.Pool, clock: Clock, unique: str) -> None:
    customer = f"c-{unique}"
    await add_customer(store_pool, customer, "de-AT")
    link = PreferenceLinks(KEYS).page(customer, clock.now + 60)
    async with aiohttp.ClientSession() as http:
        async with http.get(_url(center, f"/p/{link}")) as answer:
            page = await answer.text()
            assert answer.status == 200
            assert answer.headers["Referrer-Policy"] == "no-referrer" and answer.headers["Cache-Control"] == "no-store"
        assert '<html lang="de">' in page and "Produktneuigkeiten" in page
        assert 'name="topic.order_updates' not in page, "a transactional topic has no box"
        assert 'name="topic.product_news.email"' in page and 'name="topic.product_news.email" checked' not in page
        assert 'name="topic.recommendations.sms" checked' in page
        form = {"form": _form_token(page), **{f"channel.{channel}": "on" for channel in CHANNELS},
                "topic.product_news.email": "on", "topic.recommendations.email": "on"}  # sms recommendations unticked
        async with http.post(_url(center, "/p"), data=form) as answer:
            assert answer.status == 200 and "Einstellungen gespeichert" in await answer.text()
        async with http.post(_url(center, "/p"), data={**form, "channel.sms": ""}) as replay:
            assert replay.status == 409 and "bereits abgeschickt" not in await replay.text()  # no Accept-Language: en
        audit = [(a.channel, a.topic, a.state, a.source) for a in await ConsentStore(store_pool).audit(customer)]
        assert sorted(audit) == [("email", "product_news", "opted_in", "preference_center"),
                                 ("sms", "recommendations", "opted_out", "preference_center")], audit
        async with http.get(_url(center, f"/p/{link}")) as answer:  # the same choices again: nothing written
            page = await answer.text()
        async with http.post(_url(center, "/p"), data={**form, "form": _form_token(page)}) as answer:
            assert "Nichts geändert" in await answer.text()
    assert len(await ConsentStore(store_pool).audit(customer)) == 2


async def test_bad_links_are_refused_alike_for_customers_and_strangers(
        center: PreferenceCenter, store_pool: asyncpg.Pool, clock: Clock, unique: str) -> None:
    known, stranger = f"known-{unique}", f"nobody-{unique}"
    await add_customer(store_pool, known, "en")
    links = PreferenceLinks(KEYS)
    pages: dict[str, list[tuple[int, str]]] = {}
    async with aiohttp.ClientSession() as http:
        for customer in (known, stranger):
            token = links.page(customer, clock.now + 60)
            payload, key_id, digest = token.split(".")
            expired = links.page(customer, clock.now - 1)
            unsubscribe = links.unsubscribe(customer, "email", "product_news", clock.now + 60)
            answers = []
            for path, method in ((f"/p/{payload}.{key_id}.{digest[::-1]}", "GET"), (f"/p/{expired}", "GET"),
                                 (f"/p/{unsubscribe}", "GET"), (f"/u/{token}", "POST")):
                async with http.request(method, _url(center, path), headers={"Accept-Language": "en"}) as answer:
                    answers.append((answer.status, await answer.text()))
            pages[customer] = answers
    assert pages[known] == pages[stranger]
    assert [status for status, _ in pages[known]] == [400, 410, 400, 400]
    assert "has expired" in pages[known][1][1] and "not valid" in pages[known][0][1]
    assert await ConsentStore(store_pool).audit(known) == []


async def test_the_json_api_needs_its_token_and_changes_only_what_it_names(
        center: PreferenceCenter, store_pool: asyncpg.Pool, unique: str) -> None:
    path = _url(center, f"/api/v1/customers/c-{unique}/preferences")
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(path) as answer:
            assert answer.status == 401
        async with http.get(path, headers={"Authorization": "Bearer " + "x" * 40}) as answer:
            assert answer.status == 403
        async with http.get(path, headers=auth) as answer:
            view = await answer.json()
        assert view["topics"]["product_news"]["channels"] == {"email": False}
        assert view["topics"]["order_updates"]["transactional"] is True
        change = {"topics": {"product_news": {"email": True}}, "channels": {"sms": False}}
        for expected in (2, 0):  # the same request again changes nothing
            async with http.put(path, json=change, headers=auth) as answer:
                body = await answer.json()
                assert (answer.status, body["changed"]) == (200, expected), body
        assert body["topics"]["product_news"]["channels"] == {"email": True} and body["channels"]["sms"] is False
        async with http.put(path, json={"topics": {"order_updates": {"email": False}}}, headers=auth) as answer:
            assert answer.status == 400 and "transactional" in (await answer.json())["error"]
    sources = {a.source for a in await ConsentStore(store_pool).audit(f"c-{unique}")}
    assert sources == {"preferences_api"}
