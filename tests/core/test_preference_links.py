"""Preference tokens: what they carry, and every way one is refused (before anything is looked up)."""

from __future__ import annotations

import base64

import pytest

from core.preference_links import LinkPurpose, PreferenceLinks, TokenProblem, TokenRefused
from core.signing import SigningKeys

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()
NOW = 1_800_000_000.0


def _links(text: str = f"k1={OLD}", signing: str | None = None) -> PreferenceLinks:
    return PreferenceLinks(SigningKeys.parse(text, signing))


def _refused(links: PreferenceLinks, token: str, purpose: LinkPurpose = LinkPurpose.PAGE,
             now: float = NOW) -> TokenProblem:
    with pytest.raises(TokenRefused) as refused:
        links.verify(token, purpose, now)
    return refused.value.problem


def test_a_token_carries_its_purpose_customer_and_expiry() -> None:
    links = _links()
    claims = links.verify(links.unsubscribe("cust-1", "email", "product_news", NOW + 60), LinkPurpose.UNSUBSCRIBE, NOW)
    assert (claims.customer_id, claims.channel, claims.topic, claims.expires_at) == (
        "cust-1", "email", "product_news", int(NOW + 60))
    form = links.verify(links.form("cust-1", NOW + 60), LinkPurpose.FORM, NOW)
    assert form.nonce and form.nonce != links.verify(links.form("cust-1", NOW + 60), LinkPurpose.FORM, NOW).nonce


def test_tampered_expired_foreign_and_misused_tokens_are_refused() -> None:
    links = _links()
    token = links.page("cust-1", NOW + 60)
    payload, key_id, digest = token.split(".")
    other = links.page("cust-2", NOW + 60).split(".")[0]
    assert _refused(links, f"{other}.{key_id}.{digest}") is TokenProblem.BAD_SIGNATURE  # another customer's payload
    assert _refused(links, f"{payload}.{key_id}.{digest[:-1]}0") is TokenProblem.BAD_SIGNATURE
    assert _refused(links, f"{payload}.k9.{digest}") is TokenProblem.UNKNOWN_KEY
    assert _refused(links, "not-a-token") is TokenProblem.MALFORMED
    assert _refused(links, "") is TokenProblem.MALFORMED
    assert _refused(links, token, now=NOW + 60) is TokenProblem.EXPIRED
    assert _refused(links, token, LinkPurpose.UNSUBSCRIBE) is TokenProblem.WRONG_PURPOSE
    assert _refused(_links(f"k1={NEW}"), token) is TokenProblem.BAD_SIGNATURE, "same key id, another key"


def test_keys_rotate_by_id() -> None:
    before = _links(f"k1={OLD}")
    during = _links(f"k1={OLD},k2={NEW}", "k2")
    old_link = before.page("cust-1", NOW + 60)
    assert during.verify(old_link, LinkPurpose.PAGE, NOW).customer_id == "cust-1", "old links keep working"
    new_link = during.page("cust-1", NOW + 60)
    assert new_link.split(".")[1] == "k2"
    assert _refused(before, new_link) is TokenProblem.UNKNOWN_KEY
    after = _links(f"k2={NEW}")
    assert _refused(after, old_link) is TokenProblem.UNKNOWN_KEY, "a retired key's links stop working"
