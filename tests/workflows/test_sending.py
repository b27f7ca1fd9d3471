"""Journeys sending through SendGrid and Twilio (local provider stub) on the real Temporal server."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.addresses import unkeyed_address_hash
from activities.send import SendPolicy
from tests.activities.journey_support import channels_for, event, journey, run_journey, send, worker
from tests.activities.provider_stub import (
    ProviderStub,
    invalid_number,
    provider,
    rate_limited,
    server_error,
    unsubscribed,
)
from tests.harness import eventually
from workflows.journey import JOURNEY_WORKFLOW, JourneyInput, JourneyStatus
from workflows.preferences import CustomerPreferences, PreferencesInput, preferences_workflow_id
from workflows.preferences_client import preferences_state, record_subscription_change
from workflows.suppression import CONTACT_KEYWORD_SIGNAL, ContactKeyword, KeywordAction

__all__ = ["provider"]


async def test_email_step_reaches_sendgrid_once_with_idempotency_key(temporal_client: Client, provider: ProviderStub,
                                                                     unique: str) -> None:
    registry = CollectorRegistry()
    workflow_id = f"journey:test:{unique}"
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url), registry=registry):
        status = await run_journey(temporal_client, f"q-{unique}", journey([send("thank_you", "email")]),
                                   event(f"c-{unique}"), workflow_id)

    [record] = status.sends
    assert (record.status, record.provider) == ("sent", "sendgrid")
    [request] = provider.sends()
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.body["subject"] == "Hi Ada"
    assert request.body["content"][0]["value"] == "Order ord-42 is in."
    # Echoed in SendGrid's Event Webhook, so a delivery report finds its send (eventflow/webhooks).
    assert request.body["custom_args"] == {"idempotency_key": f"{workflow_id}/thank_you", "customer_id": f"c-{unique}",
                                           "workflow_id": workflow_id, "step_id": "thank_you", "channel": "email"}
    labels = {"channel": "email", "provider": "sendgrid", "outcome": "sent"}
    assert registry.get_sample_value("eventflow_notifications_sent_total", labels) == 1.0
    assert registry.get_sample_value("eventflow_notification_send_seconds_count",
                                     {"channel": "email", "provider": "sendgrid"}) == 1.0


async def test_an_email_with_an_html_part_reaches_sendgrid_as_text_and_html(temporal_client: Client,
                                                                               provider: ProviderStub,
                                                                               unique: str) -> None:
    base = event(f"c-{unique}")
    trigger = replace(base, customer=replace(base.customer, first_name="<script>x</script>"))
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url)):
        status = await run_journey(temporal_client, f"q-{unique}", journey([send("hi", "email", template="hello_html")]),
                                   trigger, f"journey:test:{unique}")

    assert status.sends[0].status == "sent"
    [request] = provider.sends()
    assert [part["type"] for part in request.body["content"]] == ["text/plain", "text/html"]
    assert request.body["content"][0]["value"] == "Order ord-42 is in."
    assert request.body["content"][1]["value"] == (
        '<html><head></head><body><p style="color: #333333;">Order <b>ord-42</b> is in, '
        '&lt;script&gt;x&lt;/script&gt;.</p></body></html>')


async def test_whatsapp_step_sends_content_template_with_rendered_variables(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url)):
        status = await run_journey(temporal_client, f"q-{unique}", journey([send("hello", "whatsapp")]),
                                   event(f"c-{unique}"), f"journey:test:{unique}")

    assert status.sends[0].status == "sent"
    [request] = provider.sends()
    assert (request.body["To"], request.body["From"]) == ("whatsapp:+15557654321", "whatsapp:+15550002222")
    assert request.body["ContentSid"] == "HXabc123"
    assert json.loads(request.body["ContentVariables"]) == {"1": "Ada", "2": "ord-42"}


async def test_two_server_errors_then_success_delivers_once(temporal_client: Client, provider: ProviderStub,
                                                            unique: str) -> None:
    provider.reply(server_error(), server_error())
    registry = CollectorRegistry()
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url), registry=registry):
        status = await run_journey(temporal_client, f"q-{unique}", journey([send("nudge", "sms")]),
                                   event(f"c-{unique}"), f"journey:test:{unique}")

    assert status.sends[0].status == "sent"
    assert len(provider.sends()) == 3
    assert len(provider.messages) == 1
    assert registry.get_sample_value("eventflow_notifications_sent_total",
                                     {"channel": "sms", "provider": "twilio", "outcome": "ProviderUnavailable"}) == 2.0


async def test_invalid_number_is_not_retried_and_falls_back_to_email(temporal_client: Client, provider: ProviderStub,
                                                                     unique: str) -> None:
    provider.reply(invalid_number())
    registry = CollectorRegistry()
    steps = [send("nudge", "sms"), send("nudge_again", "sms"), send("fallback_step", "sms", fallback="email")]
    provider.reply(invalid_number(), invalid_number())
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url), registry=registry):
        status = await run_journey(temporal_client, f"q-{unique}", journey(steps), event(f"c-{unique}"),
                                   f"journey:test:{unique}")

    first, second, third = status.sends
    assert first.outcome == "failed:InvalidAddress"
    assert second.outcome == "failed:InvalidAddress"
    assert (third.channel, third.status, third.fallback_from) == ("email", "sent", "sms:failed:InvalidAddress")
    assert [r.path.startswith("/2010") for r in provider.sends()] == [True, True, True, False]
    assert registry.get_sample_value("eventflow_notifications_sent_total",
                                     {"channel": "sms", "provider": "twilio", "outcome": "failed:InvalidAddress"}) == 3.0


async def test_free_form_whatsapp_with_no_window_known_fails_outside_it_and_the_fallback_carries_the_message(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    registry = CollectorRegistry()
    steps = [send("chat", "whatsapp", template="chat", fallback="sms"), send("again", "whatsapp", template="chat")]
    # No customer store: nothing says the customer wrote in the last 24 hours.
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url), registry=registry):
        status = await run_journey(temporal_client, f"q-{unique}", journey(steps), event(f"c-{unique}"),
                                   f"journey:test:{unique}")

    fallback, alone = status.sends
    assert (fallback.channel, fallback.status, fallback.fallback_from) == ("sms", "sent", "whatsapp:failed:OutsideWhatsAppWindow")
    assert alone.outcome == "failed:OutsideWhatsAppWindow"
    assert [r.body["To"] for r in provider.sends()] == ["+15557654321"], "one SMS, no WhatsApp call"
    assert registry.get_sample_value("eventflow_notifications_sent_total", {
        "channel": "whatsapp", "provider": "twilio", "outcome": "failed:OutsideWhatsAppWindow"}) == 2.0


async def test_a_number_that_is_not_one_is_failed_invalid_address_and_never_reaches_the_provider(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    registry = CollectorRegistry()
    steps = [send("nudge", "sms", fallback="email")]
    # National, and the worker has no default region: no country to read it in.
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url), registry=registry):
        status = await run_journey(temporal_client, f"q-{unique}", journey(steps),
                                   event(f"c-{unique}", phone="0151 23456789"), f"journey:test:{unique}")

    [record] = status.sends
    assert (record.channel, record.status, record.fallback_from) == ("email", "sent", "sms:failed:InvalidAddress")
    assert [r.path.startswith("/v3/") for r in provider.sends()] == [True]
    assert registry.get_sample_value("eventflow_notifications_sent_total",
                                     {"channel": "sms", "provider": "twilio", "outcome": "failed:InvalidAddress"}) == 1.0


async def test_numbers_are_sent_in_e164_and_a_stop_for_one_way_of_writing_suppresses_them_all(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    queue, customer = f"q-{unique}", f"c-{unique}"
    policy = SendPolicy(phone_default_region="DE")
    async with worker(temporal_client, queue, channels_for(provider.base_url), policy=policy):
        sent = await run_journey(temporal_client, queue, journey([send("nudge", "sms")]),
                                 event(customer, phone="0151 2345 6789"), f"journey:test:{unique}")
        assert sent.sends[0].status == "sent"
        assert provider.sends()[0].body["To"] == "+4915123456789"
        # The STOP as the webhook service records it: hashed from the sender Twilio names, in E.164.
        stop = ContactKeyword("sms", unkeyed_address_hash("sms", "+4915123456789"), KeywordAction.OPT_OUT,
                              "2026-11-25T10:05:00+00:00", f"stop-{unique}")
        await temporal_client.start_workflow(
            CustomerPreferences.run, PreferencesInput(customer), id=preferences_workflow_id(customer),
            task_queue=queue, start_signal=CONTACT_KEYWORD_SIGNAL, start_signal_args=[stop])
        outcomes = [(await run_journey(temporal_client, queue, journey([send("nudge", "sms")]),
                                       event(customer, phone=phone), f"journey:test:{unique}:{n}")).sends[0].status
                    for n, phone in enumerate(["+49 151 23456789", "0049-151-234-56789", "(0151) 234.567.89"])]

    assert outcomes == ["suppressed"] * 3
    assert len(provider.sends()) == 1


async def test_rate_limit_waits_for_retry_after(temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    provider.reply(rate_limited(4))
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url)):
        status = await run_journey(temporal_client, f"q-{unique}", journey([send("nudge", "sms")]),
                                   event(f"c-{unique}"), f"journey:test:{unique}")

    assert status.sends[0].status == "sent"
    limited, delivered = provider.sends()
    # The retry policy alone would retry after 1 s; Retry-After says 4.
    assert delivered.at - limited.at >= 3.9


async def test_duplicate_start_and_replay_call_the_provider_once(temporal_client: Client, provider: ProviderStub,
                                                                  unique: str) -> None:
    workflow_id = f"journey:test:{unique}"
    snapshot, trigger = journey([send("thank_you", "email")]), event(f"c-{unique}")
    queue = f"q-{unique}"
    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        handle = await temporal_client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(snapshot, trigger),
                                                      id=workflow_id, task_queue=queue, result_type=JourneyStatus)
        with pytest.raises(WorkflowAlreadyStartedError):  # the duplicate event
            await temporal_client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(snapshot, trigger),
                                                 id=workflow_id, task_queue=queue)
        first = await handle.result()
        # A consumer replay after the journey finished starts a new run with the same id and step keys.
        replay = await run_journey(temporal_client, queue, snapshot, trigger, workflow_id)

    assert first.sends[0].status == "sent"
    assert replay.sends[0].status == "duplicate"
    assert replay.sends[0].provider_message_id == first.sends[0].provider_message_id
    assert len(provider.sends()) == 1


async def test_stop_reply_at_provider_opts_the_customer_out_of_the_channel(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    provider.reply(unsubscribed())
    steps = [send("first", "sms"), send("second", "sms"), send("third", "email")]
    async with worker(temporal_client, f"q-{unique}", channels_for(provider.base_url)):
        status = await run_journey(temporal_client, f"q-{unique}", journey(steps), event(f"c-{unique}"),
                                   f"journey:test:{unique}")
        state = await preferences_state(temporal_client, f"c-{unique}")

    assert [s.outcome for s in status.sends] == ["failed:RecipientUnsubscribed", "opted_out", "sent"]
    assert len(provider.sends()) == 2
    assert state.channels["sms"].subscribed is False and state.channels["sms"].source == "provider"


async def test_unsubscribe_mid_journey_stops_further_sends_on_that_channel(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    queue, customer = f"q-{unique}", f"c-{unique}"
    steps = [send("first", "sms"), {"id": "pause", "delay": {"duration": "3s"}}, send("second", "sms"),
             send("third", "email")]
    trigger = event(customer)
    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        handle = await temporal_client.start_workflow(JOURNEY_WORKFLOW, JourneyInput(journey(steps), trigger),
                                                      id=f"journey:test:{unique}", task_queue=queue,
                                                      result_type=JourneyStatus)
        await eventually(lambda: len(provider.sends()) == 1, message="the first SMS")
        unsubscribe = event(customer)
        unsubscribe = type(unsubscribe)(event_id=f"unsub-{unique}", event_type="SubscriptionChanged",
                                        occurred_at="2026-11-25T10:05:00+00:00", customer=trigger.customer,
                                        payload={"channel": "SMS", "subscribed": False, "source": "preference_center"})
        await record_subscription_change(temporal_client, unsubscribe, queue)
        await record_subscription_change(temporal_client, unsubscribe, queue)  # a redelivery changes nothing
        status = await handle.result()

    assert [s.status for s in status.sends] == ["sent", "opted_out", "sent"]
    assert [r.path.startswith("/2010") for r in provider.sends()] == [True, False]


async def test_preferences_history_continues_as_new_and_keeps_state(temporal_client: Client, provider: ProviderStub,
                                                                     unique: str) -> None:
    from workflows import preferences

    queue, customer = f"q-{unique}", f"c-{unique}"
    base = event(customer)
    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        for index in range(preferences.MAX_CHANGES_PER_RUN + 5):
            change = type(base)(event_id=f"sub-{unique}-{index}", event_type="SubscriptionChanged",
                                occurred_at=f"2026-11-25T10:{index // 60:02d}:{index % 60:02d}+00:00",
                                customer=base.customer,
                                payload={"channel": "EMAIL", "subscribed": index % 2 == 0, "source": "test"})
            await record_subscription_change(temporal_client, change, queue)
        handle = temporal_client.get_workflow_handle(preferences.preferences_workflow_id(customer))

        async def continued() -> bool:
            history = [e async for e in handle.fetch_history_events()]
            return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING and len(history) < 100

        await eventually(continued, message="a fresh run after continue-as-new")
        state = await preferences_state(temporal_client, customer)

    last = preferences.MAX_CHANGES_PER_RUN + 4
    assert state.channels["email"].subscribed is (last % 2 == 0)
    assert f"sub-{unique}-{last}" in state.seen_event_ids


async def test_burst_is_spread_by_the_token_bucket(temporal_client: Client, provider: ProviderStub,
                                                   unique: str) -> None:
    """Every send takes a token, and the grants never exceed the bucket's budget in any window.

    Asserted on the limiter's own decisions (grant instants on its clock), not on wall-clock spans
    at the provider, which a loaded machine stretches or squeezes.
    """
    from activities.ratelimit import TokenBucket
    from activities.sms_twilio import TwilioChannel

    class RecordingBucket(TokenBucket):
        def __init__(self) -> None:
            super().__init__(rate_per_second=5, burst=2)
            self.grants: list[tuple[float, float]] = []  # (instant, seconds waited)

        async def acquire(self) -> float:
            waited = await super().acquire()
            self.grants.append((time.monotonic(), waited))
            return waited

    bucket = RecordingBucket()
    channels = channels_for(provider.base_url)
    sms = channels["sms"]
    assert isinstance(sms, TwilioChannel)
    channels["sms"] = TwilioChannel(sms._client, "sms", bucket)
    queue = f"q-{unique}"
    async with worker(temporal_client, queue, channels):
        await asyncio.gather(*(run_journey(temporal_client, queue, journey([send("nudge", "sms")]),
                                           event(f"c-{unique}-{n}"), f"journey:test:{unique}:{n}")
                               for n in range(6)))

    assert len(provider.sends()) == len(bucket.grants) == 6
    instants = [at for at, _ in bucket.grants]
    assert instants == sorted(instants)  # served in arrival order
    for i in range(len(instants)):
        for j in range(i, len(instants)):
            granted = j - i + 1
            # At most the burst plus what refilled in between (plus a sliver: the instant is read just
            # after the grant).
            assert granted <= bucket.burst + (instants[j] - instants[i]) * bucket.rate_per_second + 1e-3


async def test_sends_recover_when_the_preferences_workflow_was_terminated(
        temporal_client: Client, provider: ProviderStub, unique: str) -> None:
    from workflows.preferences import preferences_workflow_id

    queue, customer = f"q-{unique}", f"c-{unique}"
    async with worker(temporal_client, queue, channels_for(provider.base_url)):
        await run_journey(temporal_client, queue, journey([send("a", "sms")], "one"), event(customer),
                          f"journey:one:{unique}")
        await temporal_client.get_workflow_handle(preferences_workflow_id(customer)).terminate("operator reset")
        again = await run_journey(temporal_client, queue, journey([send("a", "sms")], "two"), event(customer),
                                  f"journey:two:{unique}")
        description = await temporal_client.get_workflow_handle(preferences_workflow_id(customer)).describe()

    assert again.sends[0].status == "sent"
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert len(provider.sends()) == 2


def test_locale_falls_back_from_region_to_language_to_the_default() -> None:
    from activities.contact import pick_locale

    variants: dict[str, object] = {"en": {}, "de": {}}
    assert pick_locale("de", variants, "en") == "de"
    assert pick_locale("de-DE", variants, "en") == "de"
    assert pick_locale("de_AT", variants, "en") == "de"
    assert pick_locale("fr-FR", variants, "en") == "en"
