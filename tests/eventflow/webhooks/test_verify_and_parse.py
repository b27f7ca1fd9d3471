"""Signatures (with the providers' own helpers) and the parsing of provider bodies, without servers."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activities.addresses import AddressHasher, unkeyed_address_hash
from activities.outcomes import DeliveryOutcome, DeliveryReport
from activities.whatsapp import InboundMessage
from consumer.feedback import FeedbackDecodeError, decode_message, encode_message
from core.errors import ConfigError
from core.signing import SigningKeys
from eventflow.webhooks.parsing import (
    KEYWORDS,
    MalformedRequest,
    keyword_of,
    sendgrid_events,
    twilio_inbound,
    twilio_status,
)
from eventflow.webhooks.verify import SENDGRID_TIMESTAMP_HEADER, SendGridVerifier, TwilioVerifier
from tests.eventflow.webhooks.signing import TWILIO_TOKEN, SendGridSigner, sendgrid_body, sendgrid_event, twilio_headers
from workflows.address_book import address_workflow_id
from workflows.suppression import (
    KeywordAction,
    Suppression,
    SuppressionReason,
    advance,
    outcome_rank,
    suppressed,
    suppression_reason,
)

ARGS = {"idempotency_key": "journey:x/note", "customer_id": "c-1", "workflow_id": "journey:x", "step_id": "note",
        "channel": "email"}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_sendgrid_signature_is_checked_by_the_sdk_helper_with_a_replay_window() -> None:
    signer = SendGridSigner()
    verifier = SendGridVerifier(signer.verification_key, replay_window_seconds=300)
    body = sendgrid_body([sendgrid_event("delivered", ARGS, event_id="e1")])
    now = time.time()
    assert verifier.verify(body, signer.headers(body), now)
    assert not verifier.verify(body + b" ", signer.headers(body), now)  # body changed after signing
    assert not verifier.verify(body, SendGridSigner().headers(body), now)  # someone else's key
    assert not verifier.verify(body, signer.headers(body, timestamp=int(now) - 301), now)  # a replay
    assert not verifier.verify(body, {}, now)
    assert not verifier.verify(body, {**signer.headers(body), "X-Twilio-Email-Event-Webhook-Signature": "%%"}, now)


@pytest.mark.parametrize("timestamp", ["²", "١٢٣", "9" * 5000, "-1", " 1", ""])
def test_a_timestamp_that_is_not_ascii_digits_is_refused_not_raised(timestamp: str) -> None:
    signer = SendGridSigner()
    verifier = SendGridVerifier(signer.verification_key, replay_window_seconds=300)
    body = sendgrid_body([sendgrid_event("delivered", ARGS, event_id="e1")])

    headers = {**signer.headers(body), SENDGRID_TIMESTAMP_HEADER: timestamp}

    assert verifier.verify(body, headers, time.time()) is False


def test_a_bad_verification_key_fails_at_start_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_VERIFICATION_KEY"):
        SendGridVerifier("not-a-key", 300)


def test_twilio_signature_covers_the_public_url_and_the_form() -> None:
    verifier = TwilioVerifier(TWILIO_TOKEN, "https://hooks.example.com/")
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    path = "/twilio/status?k=journey%3Ax%2Fnote&c=c-1"
    headers = twilio_headers("https://hooks.example.com" + path, params)
    assert verifier.verify(path, params, headers)
    assert not verifier.verify(path, {**params, "MessageStatus": "failed"}, headers)
    assert not verifier.verify("/twilio/status?k=other", params, headers)
    assert not verifier.verify(path, params, twilio_headers("https://hooks.example.com" + path, params, "wrong"))
    assert not verifier.verify(path, params, {})


def test_sendgrid_events_become_reports_naming_the_send_without_the_address() -> None:
    body = sendgrid_body([
        sendgrid_event("processed", ARGS, event_id="e0"),
        sendgrid_event("bounce", ARGS, event_id="e1", type="bounce"),
        sendgrid_event("open", {}, event_id="e2"),  # not one of ours: no custom args
        sendgrid_event("click", ARGS, event_id="e3"),
    ])
    reports = [m.report for m in sendgrid_events(body)]
    # `processed` is SendGrid's word that it took the send: it settles a send whose answer was lost.
    assert [(r.report.outcome, r.report.report_id, r.report.error_code) for r in reports if r] == [
        (DeliveryOutcome.ACCEPTED, "sendgrid:e0", ""), (DeliveryOutcome.BOUNCED, "sendgrid:e1", "bounce"),
        (DeliveryOutcome.CLICKED, "sendgrid:e3", "")]
    first = reports[1]
    assert first is not None and first.address_hash == unkeyed_address_hash("email", "ADA@example.com")
    assert first.report.provider_message_id == "sgmsg123"
    assert "ada@example.com" not in encode_message(sendgrid_events(body)[0]).decode()
    dropped = sendgrid_events(sendgrid_body([sendgrid_event("dropped", ARGS, event_id="e4",
                                                            reason="Bounced Address ada@example.com")]))
    assert "ada@example.com" not in encode_message(dropped[0]).decode()


@pytest.mark.parametrize("body", [b"not json", b"{}", b'[{"no": "event"}]',
                                  json.dumps([{"event": "open", "idempotency_key": "k", "timestamp": 1}]).encode(),
                                  json.dumps([{"event": "open", "idempotency_key": "k", "sg_event_id": "e",
                                               "timestamp": "soon"}]).encode()])
def test_malformed_sendgrid_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        sendgrid_events(body)


def test_twilio_statuses_map_to_outcomes_and_ignore_progress() -> None:
    query = {"k": "journey:x/sms", "c": "c-1", "w": "journey:x", "s": "sms", "ch": "sms"}
    base = {"MessageSid": "SM1", "To": "+15557654321"}
    failed = twilio_status({**base, "MessageStatus": "failed", "ErrorCode": "30003"}, query, NOW)
    assert failed is not None and failed.report is not None
    assert (failed.report.report.outcome, failed.report.report.error_code) == (DeliveryOutcome.UNDELIVERED, "30003")
    assert failed.report.report.report_id == "twilio:SM1:failed"
    assert twilio_status({**base, "MessageStatus": "queued"}, query, NOW) is None
    assert twilio_status({**base, "MessageStatus": "delivered"}, {}, NOW) is None  # not sent by Eventflow
    whatsapp = twilio_status({**base, "To": "whatsapp:+15557654321", "MessageStatus": "read"}, {"k": "k"}, NOW)
    assert whatsapp is not None and whatsapp.report is not None
    assert (whatsapp.report.report.channel, whatsapp.report.report.outcome) == ("whatsapp", DeliveryOutcome.OPENED)
    with pytest.raises(MalformedRequest):
        twilio_status({"To": "+1"}, query, NOW)


@pytest.mark.parametrize(("body", "action"), [
    ("STOP", KeywordAction.OPT_OUT), (" stopall\n", KeywordAction.OPT_OUT), ("Unsubscribe", KeywordAction.OPT_OUT),
    ("cancel", KeywordAction.OPT_OUT), ("END", KeywordAction.OPT_OUT), ("quit", KeywordAction.OPT_OUT),
    ("start", KeywordAction.OPT_IN), ("YES", KeywordAction.OPT_IN), ("unstop", KeywordAction.OPT_IN),
    ("help", KeywordAction.HELP), ("INFO", KeywordAction.HELP), ("stop it", None), ("thanks", None)])
def test_inbound_keywords_and_their_synonyms(body: str, action: KeywordAction | None) -> None:
    assert keyword_of(body) == action


def test_inbound_stop_names_the_hashed_number_and_help_hands_on_nothing() -> None:
    [stop, _] = twilio_inbound({"From": "whatsapp:+15557654321", "Body": "STOP", "MessageSid": "SM9"}, NOW)
    assert stop.keyword is not None
    assert (stop.keyword.channel, stop.keyword.action) == ("whatsapp", KeywordAction.OPT_OUT)
    assert stop.keyword.address_hash == unkeyed_address_hash("whatsapp", "+1 555 765 4321") \
        != unkeyed_address_hash("sms", "+15557654321")
    assert twilio_inbound({"From": "+15557654321", "Body": "HELP", "MessageSid": "SM8"}, NOW) == []
    with pytest.raises(MalformedRequest):
        twilio_inbound({"Body": "STOP"}, NOW)


def test_with_address_keys_reports_and_keywords_carry_keyed_hashes_and_a_keyword_every_form() -> None:
    hasher = AddressHasher(SigningKeys.parse(f"old={base64.b64encode(bytes(32)).decode()},"
                                             f"new={base64.b64encode(bytes(range(32))).decode()}", "new"))
    [report] = sendgrid_events(sendgrid_body([sendgrid_event("bounce", ARGS, event_id="e9")]), hasher)
    assert report.report is not None and report.report.address_hash == hasher.hash("email", "ada@example.com")
    assert report.report.address_hash.startswith("new:")
    [stop] = twilio_inbound({"From": "+15557654321", "Body": "STOP", "MessageSid": "SM9"}, NOW, hasher)
    assert stop.keyword is not None
    assert [stop.keyword.address_hash, *stop.keyword.other_address_hashes] == list(hasher.forms("sms", "+15557654321"))
    assert decode_message(encode_message(stop)) == stop, "the other forms survive the feedback topic"


def test_any_inbound_whatsapp_message_records_when_the_number_last_wrote_and_sms_ones_do_not() -> None:
    [chat] = twilio_inbound({"From": "whatsapp:+15557654321", "Body": "where is my order?", "MessageSid": "SM7"}, NOW)
    assert chat.inbound == InboundMessage(unkeyed_address_hash("whatsapp", "+15557654321"),
                                          unkeyed_address_hash("sms", "+15557654321"), NOW.isoformat(), "twilio:SM7")
    assert chat.key == address_workflow_id("whatsapp", chat.inbound.address_hash)
    [stop, opened] = twilio_inbound({"From": "whatsapp:+15557654321", "Body": "stop", "MessageSid": "SM6"}, NOW)
    assert stop.keyword is not None and opened.inbound is not None, "a keyword is a message too"
    assert twilio_inbound({"From": "+15557654321", "Body": "where is my order?", "MessageSid": "SM5"}, NOW) == []


def test_feedback_records_round_trip_and_bad_ones_are_typed_errors() -> None:
    [message] = sendgrid_events(sendgrid_body([sendgrid_event("delivered", ARGS, event_id="e1")]))
    assert decode_message(encode_message(message)) == message
    [stop] = twilio_inbound({"From": "+15557654321", "Body": "STOP", "MessageSid": "SM9"}, NOW)
    assert decode_message(encode_message(stop)) == stop
    [chat] = twilio_inbound({"From": "whatsapp:+15557654321", "Body": "hi", "MessageSid": "SM8"}, NOW)
    assert decode_message(encode_message(chat)) == chat
    for raw in (b"{", b'{"kind": "report"}', b'{"kind": "other"}'):
        with pytest.raises(FeedbackDecodeError):
            decode_message(raw)


OUTCOMES = st.sampled_from(list(DeliveryOutcome))


@given(st.lists(OUTCOMES, min_size=1, max_size=12))
def test_an_outcome_never_moves_back_whatever_order_reports_arrive_in(reports: list[DeliveryOutcome]) -> None:
    current, ranks = "", []
    for outcome in reports:
        if advance(current, outcome):
            current = outcome.value
        ranks.append(outcome_rank(current))
    assert ranks == sorted(ranks)
    assert outcome_rank(current) == max(outcome_rank(o) for o in reports)


def test_which_reports_suppress_and_what_a_suppression_matches() -> None:
    def report(outcome: DeliveryOutcome, code: str = "") -> DeliveryReport:
        return DeliveryReport("k", "c", "email", "sendgrid", outcome, "2026-12-01T00:00:00+00:00", error_code=code)

    assert suppression_reason(report(DeliveryOutcome.BOUNCED, "bounce")) is SuppressionReason.HARD_BOUNCE
    assert suppression_reason(report(DeliveryOutcome.BOUNCED, "blocked")) is None  # a soft bounce
    assert suppression_reason(report(DeliveryOutcome.SPAM_REPORTED)) is SuppressionReason.SPAM_REPORT
    assert suppression_reason(report(DeliveryOutcome.UNSUBSCRIBED)) is SuppressionReason.UNSUBSCRIBE
    assert suppression_reason(report(DeliveryOutcome.UNDELIVERED, "21610")) is SuppressionReason.STOP
    assert suppression_reason(report(DeliveryOutcome.OPENED)) is None
    listed = {"email:a": Suppression("email", "a", SuppressionReason.HARD_BOUNCE, "t")}
    assert suppressed(listed, "email", "a") is not None
    assert suppressed(listed, "email", "b") is None  # a new address is not suppressed
    assert suppressed(listed, "sms", "a") is None
    assert suppressed(listed, "email", "") is not None  # unknown address: err towards not sending


def test_every_keyword_is_upper_case() -> None:
    assert all(word == word.upper() for word in KEYWORDS)
