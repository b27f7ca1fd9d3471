"""The preference page in a real headless Chromium (the OS package), driven by Playwright.

Playwright is pointed at ``/usr/bin/chromium`` (``eventflow dev provision`` installs it with apt-get
where it is missing); Playwright's own browser downloads are never used. The page is worked with
the keyboard and found by its labels, as a screen-reader or keyboard user would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright

from core.preference_links import PreferenceLinks
from eventflow.preferences.app import PreferenceCenter
from store.consent import ConsentStore
from tests.eventflow.preferences.conftest import KEYS, Clock, add_customer

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        message = f"{CHROMIUM} is missing: `eventflow dev provision` installs it (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        await launched.close()


async def test_a_customer_unticks_a_topic_and_sees_the_confirmation(
        browser: Browser, center: PreferenceCenter, store_pool: asyncpg.Pool, clock: Clock, unique: str) -> None:
    customer = f"c-{unique}"
    await add_customer(store_pool, customer, "en")
    page = await browser.new_page()
    try:
        link = PreferenceLinks(KEYS).page(customer, clock.now + 60)
        await page.goto(f"http://127.0.0.1:{center.port}/p/{link}")
        assert await page.title() == "Your notification preferences"
        box = page.get_by_label("Recommendations: Email")
        assert await box.is_checked()
        await box.focus()
        await page.keyboard.press("Space")
        assert not await box.is_checked()
        await page.get_by_role("button", name="Save preferences").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_load_state()
        assert await page.get_by_role("status").inner_text() == \
            "Your preferences are saved. They apply from the next message."
    finally:
        await page.close()
    states = await ConsentStore(store_pool).states(customer)
    assert states == {("email", "recommendations"): "opted_out"}


@pytest.mark.parametrize("kind", ["expired", "tampered"])
async def test_a_bad_link_shows_a_clear_error_and_changes_nothing(
        browser: Browser, center: PreferenceCenter, store_pool: asyncpg.Pool, clock: Clock, unique: str,
        kind: str) -> None:
    customer = f"c-{unique}"
    await add_customer(store_pool, customer, "en")
    links = PreferenceLinks(KEYS)
    if kind == "expired":
        token = links.page(customer, clock.now + 60)
        clock.now += 61
    else:
        payload, key_id, digest = links.page(customer, clock.now + 60).split(".")
        token = f"{links.page('someone-else', clock.now + 60).split('.')[0]}.{key_id}.{digest}"
    page = await browser.new_page()
    try:
        answer = await page.goto(f"http://127.0.0.1:{center.port}/p/{token}")
        assert answer is not None and answer.status == (410 if kind == "expired" else 400)
        assert await page.get_by_role("heading").inner_text() == "This link cannot be used"
        expected = "This link has expired." if kind == "expired" else "This link is not valid."
        assert (await page.get_by_role("alert").inner_text()).startswith(expected)
        assert await page.locator("form").count() == 0, "nothing to submit"
    finally:
        await page.close()
    assert await ConsentStore(store_pool).states(customer) == {}
