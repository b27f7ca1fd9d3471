"""The profile: later-occurring values win, redeliveries change nothing, journeys get no address, state carries over."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.worker import Worker

from activities.contact import ContactPoints
from events.model import Customer, CustomerEvent
from tests.harness import eventually
from workflows.preferences import MAX_CHANGES_PER_RUN, CustomerPreferences, preferences_workflow_id
from workflows.preferences_client import ProfileDirectory, record_profile_update
from workflows.profile import (
    CustomerProfile,
    ProfileUpdate,
    apply_update,
    journey_event,
    merge_profiles,
    profile_update_of,
)


def _event(event_type: str = "PurchaseCompleted", *, identify: bool = False, override: bool = False,
           **customer: object) -> CustomerEvent:
    return CustomerEvent("e1", event_type, "2026-11-25T10:00:00+00:00", Customer(id="c1", **customer),  # type: ignore[arg-type]  # test fields
                         {"order_id": "o1"}, identify=identify, contact_override=override)


def _fold(updates: list[ProfileUpdate]) -> CustomerProfile:
    profile = CustomerProfile()
    for update in updates:
        profile = apply_update(profile, update)
    return profile


UPDATES = st.lists(st.builds(
    ProfileUpdate,
    event_id=st.sampled_from(["a", "b", "c", "d"]),
    occurred_at=st.sampled_from(["2026-01-01T10:00:00Z", "2026-01-01T11:00:00+01:00", "2026-01-02T00:00:00Z",
                                 "not a time"]),
    email=st.one_of(st.none(), st.sampled_from(["x@example.com", "y@example.com"])),
    phone=st.one_of(st.none(), st.just("+15550100001")),
    locale=st.one_of(st.none(), st.sampled_from(["de", "fr"])),
    attributes=st.dictionaries(st.sampled_from(["tier", "city"]), st.sampled_from(["gold", "Paris"]), max_size=2),
), max_size=6).map(lambda updates: _consistent(updates))


def _consistent(updates: list[ProfileUpdate]) -> list[ProfileUpdate]:
    """One event id says one thing at one time (as redeliveries of one event do)."""
    first: dict[str, ProfileUpdate] = {}
    for update in updates:
        first.setdefault(update.event_id, update)
    return [first[u.event_id] for u in updates]


@settings(max_examples=200, deadline=None)
@given(UPDATES, st.randoms())
def test_the_profile_does_not_depend_on_arrival_order_or_redelivery(updates: list[ProfileUpdate],
                                                                    rnd: random.Random) -> None:
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    redelivered = shuffled + shuffled[: len(shuffled) // 2]

    assert _fold(redelivered) == _fold(updates)


@settings(max_examples=100, deadline=None)
@given(UPDATES, UPDATES)
def test_merging_carried_state_equals_folding_everything(older: list[ProfileUpdate],
                                                         newer: list[ProfileUpdate]) -> None:
    ids = {u.event_id for u in older}
    newer = [u for u in newer if u.event_id not in ids]  # one event id says one thing

    assert merge_profiles(_fold(older), _fold(newer)) == _fold(older + newer)


def test_a_later_occurring_email_wins_over_an_earlier_one_that_arrives_last() -> None:
    later = ProfileUpdate("e2", "2026-01-02T00:00:00Z", email="new@example.com")
    earlier = ProfileUpdate("e1", "2026-01-01T00:00:00Z", email="old@example.com", phone="+15550100001")

    profile = _fold([later, earlier])

    assert (profile.email, profile.phone) == ("new@example.com", "+15550100001")
    assert profile.field_names() == ["email", "phone"]


def test_the_envelope_defaults_change_nothing_unless_a_profile_update_names_the_field() -> None:
    update = profile_update_of(_event(email="a@example.com"))
    identify = profile_update_of(_event("ProfileUpdated", email="a@example.com"))
    to_english = profile_update_of(replace(_event("ProfileUpdated"), payload={"changed_fields": ["locale"]}))
    moved = profile_update_of(_event("UserSignedUp", timezone="Europe/Berlin"))

    assert update is not None and (update.timezone, update.locale, update.identify) == (None, None, False)
    assert identify is not None and (identify.timezone, identify.locale, identify.identify) == (None, None, True)
    assert to_english is not None and (to_english.timezone, to_english.locale) == (None, "en")
    assert moved is not None and (moved.timezone, moved.locale) == ("Europe/Berlin", None)
    assert profile_update_of(_event()) is None, "an event with no contact details updates nothing"
    assert profile_update_of(_event(identify=True)) is not None, "an identify event always reaches the profile"


def test_journeys_get_the_event_without_contact_details_unless_the_source_overrides() -> None:
    full: dict[str, Any] = dict(email="a@example.com", phone="+15550100001", whatsapp="+15550100002", first_name="Ada",
                attributes={"tier": "gold"}, timezone="Europe/Berlin", locale="de")

    stripped = journey_event(_event(**full))
    kept = journey_event(_event(override=True, **full))

    assert stripped.customer == Customer(id="c1", timezone="Europe/Berlin", locale="de")
    assert (stripped.event_id, stripped.payload) == ("e1", {"order_id": "o1"})
    assert kept.customer.email == "a@example.com"


def test_channels_pick_their_contact_point() -> None:
    points = ContactPoints(email="a@example.com", phone="+15550100001")

    assert [points.address_for(c) for c in ("email", "sms", "whatsapp")] == [
        "a@example.com", "+15550100001", "+15550100001"]
    assert ContactPoints(whatsapp="+15550100002", phone="+1555").address_for("whatsapp") == "+15550100002"
    assert list(itertools.chain(ContactPoints().address_for(c) or "" for c in ("email", "sms"))) == ["", ""]


async def test_the_profile_survives_continue_as_new_on_the_real_server(temporal_client: Client, unique: str) -> None:
    queue, customer = f"q-{unique}", f"c-{unique}"
    handle = temporal_client.get_workflow_handle(preferences_workflow_id(customer))
    updates = [ProfileUpdate(f"p-{unique}-{index}", f"2026-11-25T10:{index // 60:02d}:{index % 60:02d}+00:00",
                             attributes={"visits": index}) for index in range(MAX_CHANGES_PER_RUN + 5)]
    updates[3] = replace(updates[3], email="early@example.com", first_name="Ada")
    updates[-2] = replace(updates[-2], email="late@example.com")
    async with Worker(temporal_client, task_queue=queue, workflows=[CustomerPreferences]):
        # Concurrently, so they arrive in any order; redelivered ones (the first ten twice) change nothing.
        for start in range(0, len(updates), 50):
            await asyncio.gather(*(record_profile_update(temporal_client, customer, u, queue)
                                   for u in updates[start:start + 50]))
        await asyncio.gather(*(record_profile_update(temporal_client, customer, u, queue) for u in updates[:10]))

        async def continued() -> bool:
            history = [e async for e in handle.fetch_history_events()]
            return len(history) < 100

        await eventually(continued, message="a fresh run after continue-as-new")
        points = await ProfileDirectory(temporal_client).contact_points(customer)
        await handle.terminate()

    assert (points.email, points.first_name) == ("late@example.com", "Ada")
    assert points.attributes == {"visits": MAX_CHANGES_PER_RUN + 4}
