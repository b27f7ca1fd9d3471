"""Workflow ids from parts: distinct parts give distinct ids, and ordinary parts keep today's ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.ids import escape_part, join_id, split_id
from journeys import instance_id
from journeys.model import EntryRule

#: Parts drawn mostly from the characters that matter: the separator, the escape and its digits.
_parts = st.text(alphabet=st.sampled_from(":%3A25ab-"), max_size=8) | st.text(max_size=8)
_tuples = st.lists(_parts, min_size=1, max_size=5).map(tuple)


@given(_tuples, _tuples)
def test_distinct_part_tuples_give_distinct_ids(first: tuple[str, ...], second: tuple[str, ...]) -> None:
    if first != second:
        assert join_id(*first) != join_id(*second)


@given(_tuples)
def test_an_id_splits_back_into_its_parts(parts: tuple[str, ...]) -> None:
    assert tuple(split_id(join_id(*parts))) == parts


@given(st.text().filter(lambda text: ":" not in text and "%" not in text))
def test_a_part_without_reserved_characters_is_kept_as_it_is(part: str) -> None:
    assert escape_part(part) == part


def test_ordinary_journey_ids_are_exactly_the_ids_running_journeys_have() -> None:
    assert instance_id("abandoned_cart", "cust-1", EntryRule.ONE_ACTIVE, None, "e-1") == "journey:abandoned_cart:cust-1"
    assert instance_id("welcome", "cust-1", EntryRule.ONCE, None, "e-1") == "journey:welcome:cust-1"
    assert (instance_id("post_purchase", "cust-2", EntryRule.ONCE_PER_KEY, "ord-2", "e-1")
            == "journey:post_purchase:cust-2:ord-2")
    assert (instance_id("browse", "user@x.example", EntryRule.EVERY_TIME, None, "6f1c-22")
            == "journey:browse:user@x.example:event:6f1c-22")


def test_a_colon_in_the_customer_or_the_key_cannot_reach_another_customers_journey() -> None:
    first = instance_id("abandoned_cart", "acme:42", EntryRule.ONCE_PER_KEY, "cart-9", "e")
    second = instance_id("abandoned_cart", "acme", EntryRule.ONCE_PER_KEY, "42:cart-9", "e")
    assert first != second
    assert first == "journey:abandoned_cart:acme%3A42:cart-9"
    assert second == "journey:abandoned_cart:acme:42%3Acart-9"
    # A once journey's customer cannot pose as a once_per_key instance either.
    assert instance_id("j", "acme:42", EntryRule.ONCE, None, "e") != instance_id("j", "acme", EntryRule.ONCE_PER_KEY, "42", "e")
    assert escape_part("100%") == "100%25"
