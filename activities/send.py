"""The send activity: preferences and ledger first, then render, rate-limit and hand to the channel.

Order of one attempt: an SMS or WhatsApp number to E.164 (an invalid one is permanent and reserves
nothing), the send's topic (an undeclared one is permanent; an opt-in topic with no store to keep
consent is skipped), a WhatsApp send's content by the customer's 24-hour window (free-form text, the
template, or a permanent ``OutsideWhatsAppWindow`` that reserves nothing; activities/whatsapp.py),
render with the preference center's links (a broken template is permanent and reserves nothing), wait
for the provider's token bucket, reserve in the delivery ledger (opt-out, quiet hours, frequency cap,
already delivered?) which leases the send to this attempt, resolve an earlier attempt that was
interrupted (reconcile with the provider, or the channel's policy for uncertain deliveries), call
the provider only if the call ends before the lease does, and report the outcome. Every wait
heartbeats. docs/architecture.md (ADR-9) gives the exactly-once argument.

A channel may list several providers (``EVENTFLOW_EMAIL_PROVIDERS=sendgrid,smtp``): a provider that
answers "unavailable" (5xx, 429, unreachable before the request left) or whose circuit breaker is
open is passed over for the next, within the same lease. The ledger records which provider each
call goes to before it leaves, and a call whose outcome is uncertain pins the send to its provider,
so one send never reaches two providers (docs/architecture.md, "Provider failover").

A push channel (``push``, ``webpush``) sends to each of the customer's devices: the send is
reserved once, then each device is marked before its call and recorded after it (`_deliver_devices`,
docs/architecture.md, "Push channels"). A push channel has one provider, so device sends never fail over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import structlog
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.addresses import PHONE_CHANNELS, UNKEYED, AddressHasher, InvalidPhoneNumber, parse_phone
from activities.caps import DEFAULT_RESERVE, CapSet, CapSpecError, Priority
from activities.channels import Channel, ChannelProviders, OutgoingMessage, providers_of
from activities.circuit import CircuitBreaker, CircuitPolicy, CircuitState
from activities.contact import ContactDirectory, masked_cause, resolve_profile, resolve_recipient
from activities.errors import (
    DeviceGoneError,
    InvalidAddressError,
    LedgerUnavailableError,
    OutsideWhatsAppWindowError,
    PermanentSendError,
    ProviderAuthError,
    RetryableSendError,
)
from activities.ledger import (
    CallMarkingLedger,
    Completion,
    DeliveryLedger,
    FunnelLedger,
    FunnelStep,
    Reservation,
    ReserveRequest,
    TopicConsentLedger,
)
from activities.links import MessageLinks
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput, SendResult
from activities.outcomes import LedgerState, ReserveDecision, SendStatus
from activities.push import DeviceDirectory, DeviceLedger, DeviceState, is_device_channel, render_push_parts
from activities.ratelimit import TokenBucket
from activities.rendering import RenderPart, TemplateRenderError, render_parts_async
from activities.topics import SkipReason, Topic, TopicCatalog, asked_default
from activities.whatsapp import InboundWindows, WhatsAppContent, choose_content
from core import tracing
from core.errors import ConfigError, EventflowError
from core.logs import mask_contact_details
from core.settings import ChannelSettings
from core.vocabulary import ChannelName

log = structlog.get_logger(__name__)

SEND_NOTIFICATION = "send_notification"
#: The error type of an attempt that gave its lease back without calling the provider (retryable).
LEASE_TOO_SHORT = "SendLeaseTooShort"
#: The error type of an attempt that found every provider of its channel behind an open circuit (retryable).
CIRCUITS_OPEN = "ProviderCircuitOpen"
#: The error type of a send naming a topic this worker's topics file does not declare (permanent).
UNKNOWN_TOPIC = "UnknownTopic"

T = TypeVar("T")


class UncertainDelivery(StrEnum):
    """What to do when an interrupted attempt may have delivered and the provider cannot say."""

    #: Never risk a second copy: the send is recorded as ``uncertain`` and not repeated.
    AT_MOST_ONCE = "at_most_once"
    #: Never risk a missing message: the send is repeated.
    AT_LEAST_ONCE = "at_least_once"


@dataclass(frozen=True)
class SendPolicy:
    """Worker-wide defaults a journey step may override, and the lease that fences attempts.

    Attributes:
        quiet_hours: ``"HH:MM-HH:MM"`` in the customer's timezone, ``""`` for none.
        daily_cap: sends per channel per local calendar day, 0 for no cap.
        heartbeat_interval_seconds: how often every wait heartbeats.
        lease_seconds: how long a reservation lets one attempt call the provider; no other attempt
            sends while it runs. Must exceed the channels' call timeouts.
        lease_margin_seconds: slack kept between the end of a provider call and the lease's end
            (scheduling delay, clock rate).
        lease_poll_seconds: how often an attempt waiting on another's lease asks again.
        uncertain_delivery: the policy for channels that cannot reconcile and whose provider
            reports nothing Eventflow can match (no webhook).
        report_window_seconds: for channels whose provider posts reports naming the send's key
            (``providers_reporting``), how long after an uncertain call a report may take to arrive:
            one arrived means the provider accepted it; none by then means it did not, and the
            send goes again. 0 leaves such sends to ``uncertain_delivery``.
        providers_reporting: provider names whose webhook reports reach the ledger (``sendgrid``
            when its Event Webhook points at ``eventflow webhooks``).
        report_poll_seconds: how often an attempt waiting for such a report asks the ledger.
        caps: rolling caps per channel and across channels (``EVENTFLOW_CAPS``); a journey or step
            overrides them per (scope, window).
        cap_reserve: slots each priority level keeps free for the levels above it.
        phone_default_region: the region of SMS and WhatsApp numbers written without a country
            code (``EVENTFLOW_PHONE_DEFAULT_REGION``); None: numbers must be international.
    """

    quiet_hours: str = ""
    daily_cap: int = 0
    heartbeat_interval_seconds: float = 2.0
    lease_seconds: float = 30.0
    lease_margin_seconds: float = 2.0
    lease_poll_seconds: float = 5.0
    uncertain_delivery: UncertainDelivery = UncertainDelivery.AT_MOST_ONCE
    caps: CapSet = CapSet()
    cap_reserve: int = DEFAULT_RESERVE
    report_window_seconds: float = 0.0
    providers_reporting: frozenset[str] = frozenset()
    report_poll_seconds: float = 2.0
    phone_default_region: str | None = None


class _Unavailable(EventflowError):  # control flow inside the activity, never raised out of it
    """A provider answered "unavailable" for certain; recorded, and the lease renewed for the next one."""

    def __init__(self, lease_deadline: float) -> None:
        super().__init__("provider unavailable")
        self.lease_deadline = lease_deadline


class NotificationActivities:
    """Activity implementations bound to the configured channels (one per channel name).

    Each channel is served by one provider or by several in failover order. Failover needs a ledger
    that records each call's provider before it leaves (`CallMarkingLedger`); with any other ledger
    only a channel's first provider is used, since nothing could tell a later attempt where an
    interrupted call went.

    ``inbound`` says when customers last wrote on WhatsApp; without it no window is known to be
    open, so WhatsApp sends go out as templates or not at all (activities/whatsapp.py).
    """

    def __init__(self, channels: Mapping[str, ChannelProviders], *, ledger: DeliveryLedger | None = None,
                 metrics: SendMetrics | None = None, policy: SendPolicy | None = None,
                 contacts: ContactDirectory | None = None, devices: DeviceDirectory | None = None,
                 circuit: CircuitPolicy | None = None, hasher: AddressHasher = UNKEYED,
                 inbound: InboundWindows | None = None, topics: TopicCatalog | None = None,
                 links: MessageLinks | None = None) -> None:
        """``devices``: the customers' push devices (the store; None: push sends find no device);
        ``topics``: the declared subscription topics (journeys/topics.yaml); ``links``: the preference
        center's links (None: templates get an empty ``preferences_url`` and emails no List-Unsubscribe)."""
        self._providers = {name: providers_of(serving) for name, serving in channels.items()}
        if served := sorted(name for name, chain in self._providers.items()
                            if is_device_channel(name) and len(chain) > 1):
            # A device send marks each device, not each provider: nothing would settle a doubt between two.
            raise ConfigError(ChannelSettings.variable(f"{served[0]}_provider"),
                              "a push channel has one provider; device sends do not fail over")
        self._hasher = hasher
        self._topics = topics or TopicCatalog()
        self._links = links
        self._contacts = contacts
        self._devices = devices
        self._inbound = inbound
        self._ledger = ledger
        self._metrics = metrics or SendMetrics(CollectorRegistry())
        self._policy = policy or SendPolicy()
        # Breakers only where there is somewhere else to go: a lone provider's failures are Temporal's
        # retry policy's business, as before.
        self._breakers = {
            (name, provider.name): CircuitBreaker(circuit or CircuitPolicy(),
                                                  on_change=partial(self._show_circuit, name, provider.name))
            for name, chain in self._providers.items() if len(chain) > 1 for provider in chain}

    def _show_circuit(self, channel: str, provider: str, state: CircuitState) -> None:
        self._metrics.circuit_state.labels(channel, provider).set(state.gauge_value)
        log.info("provider_circuit", channel=channel, provider=provider, state=state.value)

    def circuit(self, channel: str, provider: str) -> CircuitState | None:
        """A provider's breaker state, None when the channel has no failover."""
        breaker = self._breakers.get((channel, provider))
        return breaker.state if breaker is not None else None

    @property
    def metrics(self) -> SendMetrics:
        return self._metrics

    def _count(self, notification: SendNotificationInput, provider: str, outcome: str) -> None:
        self._metrics.sent.labels(notification.channel, provider, outcome).inc()

    def _count_capped(self, notification: SendNotificationInput, reservation: Reservation) -> None:
        if reservation.capped_by:
            self._metrics.capped.labels(notification.channel, reservation.capped_by,
                                        Priority.of(notification.priority)).inc()

    @activity.defn(name=SEND_NOTIFICATION)
    async def send_notification(self, notification: SendNotificationInput) -> SendResult:
        return await self.send(notification)

    async def send(self, notification: SendNotificationInput, *, contacts: ContactDirectory | None = None) -> SendResult:
        """One send attempt, as the activity makes it; ``contacts`` replaces the worker's directory for it.

        A broadcast batch reads its recipients' profiles with the batch (one statement for all of
        them) and hands each send its own, instead of one profile read per recipient.
        """
        tracing.annotate({tracing.JOURNEY: notification.journey_id, tracing.STEP: notification.step_id,
                          tracing.CHANNEL: notification.channel, tracing.WORKFLOW_ID: notification.workflow_id})
        providers = self._providers.get(notification.channel)
        if not providers:
            raise ApplicationError(f"no channel configured for {notification.channel!r}",
                                   type="ChannelNotConfigured", non_retryable=True)
        channel = providers[0]
        if is_device_channel(notification.channel):
            return await self._send_to_devices(notification, channel)
        directory = contacts if contacts is not None else self._contacts
        recipient = await self._beat(resolve_recipient(directory, notification))
        if recipient is None:
            # Recorded, never retried: no attempt could find an address this one did not.
            self._count(notification, channel.name, SendStatus.NO_CONTACT)
            activity.logger.info("notification_no_contact channel=%s template=%s", notification.channel,
                                 notification.template_id)
            return SendResult(SendStatus.NO_CONTACT, channel.name)
        notification, address = recipient.notification, self._address(notification, channel, recipient.address)
        topic = self._topic(notification, channel)
        if topic is not None and not topic.subscribed(None) and not isinstance(self._ledger, TopicConsentLedger):
            # No store keeps this customer's consent to an opt-in topic: nobody could have given it.
            return self._skipped_no_consent(notification, channel)
        notification = await self._whatsapp_content(notification, channel, address)
        now = time.time()
        notification = self._with_links(notification, now)
        message = await _render(notification, address)
        message = self._with_unsubscribe(message, notification, topic, now)
        caps = _caps_for(notification, self._policy.caps)
        result = await self._send(notification, providers, message, caps, topic)
        tracing.annotate({tracing.PROVIDER: result.provider, tracing.OUTCOME: result.status.value})
        activity.logger.info("notification_%s channel=%s provider=%s template=%s", result.status,
                             notification.channel, result.provider, notification.template_id)
        return result

    async def _send_to_devices(self, notification: SendNotificationInput, channel: Channel) -> SendResult:
        """A push send: one message per registered device of the channel, reserved once (`activities.push`)."""
        devices = [] if self._devices is None else await self._beat(
            self._devices.devices(notification.customer.id, notification.channel))
        if not devices:
            self._count(notification, channel.name, SendStatus.NO_CONTACT)
            activity.logger.info("notification_no_contact channel=%s template=%s", notification.channel,
                                 notification.template_id)
            return SendResult(SendStatus.NO_CONTACT, channel.name)
        notification = await self._beat(resolve_profile(self._contacts, notification))
        # Consent per topic and the preference link hold for push as for any send (no List-Unsubscribe: not email).
        topic = self._topic(notification, channel)
        if topic is not None and not topic.subscribed(None) and not isinstance(self._ledger, TopicConsentLedger):
            return self._skipped_no_consent(notification, channel)
        notification = self._with_links(notification, time.time())
        base = await _render(notification, "")
        try:
            parts = await render_push_parts(notification)
        except TemplateRenderError as exc:
            raise ApplicationError(mask_contact_details(str(exc)), type="TemplateRenderError",
                                   non_retryable=True) from masked_cause(exc)
        messages = [replace(base, to=device.address, device_id=device.device_id, subject=parts.title or base.subject,
                            link=parts.link, data=dict(parts.data)) for device in devices]
        result = await self._send(notification, (channel,), base, _caps_for(notification, self._policy.caps),
                                  topic, devices=messages)
        activity.logger.info("notification_%s channel=%s provider=%s template=%s devices=%d", result.status,
                             notification.channel, result.provider, notification.template_id, len(messages))
        return result

    def _address(self, notification: SendNotificationInput, channel: Channel, address: str) -> str:
        """The address to send to and hash: a phone or WhatsApp number in E.164, so every way of writing
        it is one address to the ledger and the suppression list; an invalid number is never sent."""
        if notification.channel not in PHONE_CHANNELS:
            return address
        try:
            return parse_phone(address, self._policy.phone_default_region)
        except InvalidPhoneNumber as exc:
            self._count(notification, channel.name, f"failed:{InvalidAddressError.error_type}")
            activity.logger.info("notification_invalid_address channel=%s problem=%s", notification.channel,
                                 exc.problem)
            # The message names the problem, never the number (it reaches the journey's history).
            raise ApplicationError(f"{notification.channel} address is {exc}", type=InvalidAddressError.error_type,
                                   non_retryable=True) from None

    async def _whatsapp_content(self, notification: SendNotificationInput, channel: Channel,
                                address: str) -> SendNotificationInput:
        """A WhatsApp send as the customer's 24-hour window allows: its free-form text, its template, or
        a permanent ``OutsideWhatsAppWindow`` before anything is reserved or called (activities/whatsapp.py)."""
        if notification.channel != ChannelName.WHATSAPP:
            return notification
        free_form = bool(notification.body_template.strip())
        last_inbound_at = None
        if free_form and self._inbound is not None:
            last_inbound_at = await self._beat(self._inbound.last_whatsapp_inbound(
                notification.customer.id, self._hasher.hash(ChannelName.WHATSAPP, address)))
        content = choose_content(free_form=free_form, template=bool(notification.provider_template_id),
                                 last_inbound_at=last_inbound_at, now=datetime.now(UTC))
        match content:
            case WhatsAppContent.FREE_FORM:
                return replace(notification, provider_template_id="", template_variable_templates={})
            case WhatsAppContent.TEMPLATE:
                return notification
            case WhatsAppContent.OUTSIDE_WINDOW:
                error_type = OutsideWhatsAppWindowError.error_type
                self._count(notification, channel.name, f"failed:{error_type}")
                activity.logger.info("notification_outside_whatsapp_window template=%s locale=%s",
                                     notification.template_id, notification.locale)
                raise ApplicationError("free-form WhatsApp text outside the 24-hour window after the customer's "
                                       "last message, and the template variant has no content_sid",
                                       type=error_type, non_retryable=True)

    def _topic(self, notification: SendNotificationInput, channel: Channel) -> Topic | None:
        if not notification.topic:
            return None
        topic = self._topics.get(notification.topic)
        if topic is None:
            self._count(notification, channel.name, f"failed:{UNKNOWN_TOPIC}")
            # A snapshot from the catalog may name a topic this release's topics file lacks: permanent.
            raise ApplicationError(f"topic {notification.topic!r} is not declared in this worker's topics file",
                                   type=UNKNOWN_TOPIC, non_retryable=True)
        return topic

    def _skipped_no_consent(self, notification: SendNotificationInput, channel: Channel) -> SendResult:
        self._count(notification, channel.name, f"{SendStatus.SKIPPED}:{SkipReason.NO_CONSENT}")
        activity.logger.info("notification_skipped reason=no_consent channel=%s topic=%s", notification.channel,
                             notification.topic)
        return SendResult(SendStatus.SKIPPED, channel.name, error_type=SkipReason.NO_CONSENT.value)

    def _with_links(self, notification: SendNotificationInput, now: float) -> SendNotificationInput:
        """The send with ``preferences_url`` in its template context (a fresh link: it expires)."""
        url = self._links.page_url(notification.customer.id, now) if self._links is not None else ""
        return replace(notification, context={**notification.context, "preferences_url": url})

    def _with_unsubscribe(self, message: OutgoingMessage, notification: SendNotificationInput, topic: Topic | None,
                          now: float) -> OutgoingMessage:
        """An email not of a transactional topic gets the one-click List-Unsubscribe headers (RFC 8058)."""
        if self._links is None or notification.channel != "email" or topic is not None and topic.transactional:
            return message
        headers = self._links.list_unsubscribe(notification.customer.id, notification.channel,
                                               topic.name if topic is not None else "", now)
        return replace(message, headers={**message.headers, **headers})

    def _beat(self, call: Awaitable[T]) -> Awaitable[T]:
        return _heartbeating(call, self._policy.heartbeat_interval_seconds)

    async def _send(self, notification: SendNotificationInput, providers: tuple[Channel, ...],
                    message: OutgoingMessage, caps: CapSet, topic: Topic | None = None,
                    devices: Sequence[OutgoingMessage] | None = None) -> SendResult:
        channel = providers[0]
        # Failover only where the ledger records each call's provider before it leaves (see the class).
        chain = providers if isinstance(self._ledger, CallMarkingLedger) else providers[:1]
        # The first provider's token bucket is waited on before the lease is taken, so the wait never
        # eats into it; a later provider's bucket is waited on within the lease (the lease check follows).
        acquired = next((p for p in chain if self.circuit(notification.channel, p.name) is not CircuitState.OPEN),
                        channel)
        if devices is None:  # push waits per device call
            await self._acquire(acquired)
        attempt = activity.info().attempt if activity.in_activity() else 1
        lease_deadline = float("inf")
        if self._ledger is not None:
            reservation, lease_deadline = await self._reserve(notification, attempt, caps, message.to, topic)
            match reservation.decision:
                case ReserveDecision.DELIVERED:
                    provider = reservation.provider or channel.name
                    self._count(notification, provider, SendStatus.DUPLICATE)
                    return SendResult(SendStatus.DUPLICATE, provider, reservation.provider_message_id)
                case ReserveDecision.OPTED_OUT:
                    self._count(notification, channel.name, SendStatus.OPTED_OUT)
                    return SendResult(SendStatus.OPTED_OUT, channel.name)
                case ReserveDecision.NO_CONSENT:
                    return self._skipped_no_consent(notification, channel)
                case ReserveDecision.CAPPED:
                    self._count_capped(notification, reservation)
                    self._count(notification, channel.name, SendStatus.CAPPED)
                    return SendResult(SendStatus.CAPPED, channel.name)
                case ReserveDecision.DEFER:
                    self._count_capped(notification, reservation)
                    self._count(notification, channel.name, SendStatus.DEFERRED)
                    return SendResult(SendStatus.DEFERRED, channel.name, not_before=reservation.not_before)
                case ReserveDecision.SUPPRESSED:
                    self._count(notification, channel.name, SendStatus.SUPPRESSED)
                    return SendResult(SendStatus.SUPPRESSED, channel.name)
                case ReserveDecision.SEND:
                    pass
                case other:
                    raise AssertionError(f"unexpected reservation {other!r}")
            try:
                if devices is not None:
                    return await self._deliver_devices(notification, channel, devices, attempt, lease_deadline)
                pinned = False
                if reservation.previous_attempt_uncertain:
                    # The earlier call went to the provider the ledger names: it alone may hold the
                    # message, so it alone is asked, and it alone may be sent to now.
                    holder = next((p for p in providers if p.name == reservation.previous_provider), channel)
                    resolved = await self._resolve_uncertain(notification, holder, message, reservation, attempt)
                    if resolved is not None:
                        return resolved
                    chain, pinned = (holder,), True
                return await self._call_in_order(notification, chain, message, attempt, lease_deadline,
                                                 acquired=acquired, pinned=pinned,
                                                 in_doubt=pinned and not self._settles(chain[0]))
            except asyncio.CancelledError:
                # Cancelled (timed out, worker stopping, Temporal unreachable) before its call was
                # marked: give the lease back so the next attempt need not wait it out or guess.
                await self._release(notification, attempt)
                raise
        if devices is not None:
            return await self._deliver_devices(notification, channel, devices, attempt, lease_deadline)
        return await self._deliver(notification, channel, message, attempt)

    async def _deliver_devices(self, notification: SendNotificationInput, channel: Channel,
                               messages: Sequence[OutgoingMessage], attempt: int, lease_deadline: float) -> SendResult:
        """One provider call per device no earlier attempt called, each marked before and recorded after.

        The send's lease fences every device mark, so two attempts never call the same device. A
        device an earlier attempt marked and never recorded is uncertain: not called again under
        ``at_most_once``. The first retryable failure ends this attempt (the next calls the rest);
        the send is delivered when any device got it, failed when none could.
        """
        key = notification.idempotency_key
        marks = self._ledger if isinstance(self._ledger, DeviceLedger) else None
        states: dict[str, DeviceState] = dict(await self._beat(marks.device_states(key))) if marks else {}
        # The send's mark names its one provider, as every call mark does (ADR "Provider failover").
        if isinstance(self._ledger, CallMarkingLedger) \
                and not await self._beat(self._ledger.mark_calling(key, attempt, channel.name)):
            raise ApplicationError("the lease ran out before the provider call", type=LEASE_TOO_SHORT)
        delivered = [state for state in states.values() if state is DeviceState.DELIVERED]
        message_ids: list[str] = []
        uncertain, gone = 0, 0
        permanent: list[PermanentSendError] = []
        retry: RetryableSendError | ApplicationError | None = None
        for message in messages:
            earlier = states.get(message.device_id)
            if earlier in (DeviceState.DELIVERED, DeviceState.FAILED):
                continue
            if earlier is DeviceState.CALLED:
                if self._policy.uncertain_delivery is UncertainDelivery.AT_MOST_ONCE:
                    uncertain += 1
                    self._metrics.uncertain.labels(notification.channel, channel.name, "not_sent_again").inc()
                    continue
                self._metrics.uncertain.labels(notification.channel, channel.name, "sent_again").inc()
            if time.monotonic() + channel.call_timeout_seconds > lease_deadline:
                retry = ApplicationError("the lease ran out before the provider call", type=LEASE_TOO_SHORT)
                break
            await self._acquire(channel)
            if marks is not None and not await self._beat(marks.mark_device_calling(key, attempt, message.device_id)):
                raise ApplicationError("the lease ran out before the provider call", type=LEASE_TOO_SHORT)
            try:
                result = await self._call_device(notification, channel, message, marks)
            except DeviceGoneError as exc:
                gone += 1
                permanent.append(exc)
                if self._devices is not None:
                    await self._beat(self._devices.remove_device(notification.customer.id, notification.channel,
                                                                 message.device_id))
                continue
            except ProviderAuthError as exc:
                permanent.append(exc)
                break  # the account is refused: every other device would be too
            except PermanentSendError as exc:
                permanent.append(exc)
                continue
            except RetryableSendError as exc:
                retry = exc
                break
            message_ids.append(result.provider_message_id or "")
        if retry is not None:
            await self._complete(notification, LedgerState.RETRYING, SendResult(SendStatus.FAILED, channel.name),
                                 attempt)
            if isinstance(retry, ApplicationError):
                raise retry
            delay = timedelta(seconds=retry.retry_after_seconds) if retry.retry_after_seconds is not None else None
            raise ApplicationError(mask_contact_details(str(retry)), type=retry.error_type,
                                   next_retry_delay=delay) from masked_cause(retry)
        if delivered or message_ids:
            result = SendResult(SendStatus.SENT, channel.name, next((m for m in message_ids if m), None))
            await self._complete(notification, LedgerState.DELIVERED, result, attempt)
            return result
        if uncertain:
            await self._complete(notification, LedgerState.UNCERTAIN, SendResult(SendStatus.UNCERTAIN, channel.name),
                                 attempt)
            self._count(notification, channel.name, SendStatus.UNCERTAIN)
            return SendResult(SendStatus.UNCERTAIN, channel.name)
        error_type = DeviceGoneError.error_type if gone == len(permanent) else next(
            e.error_type for e in permanent if not isinstance(e, DeviceGoneError))
        await self._complete(notification, LedgerState.FAILED, SendResult(SendStatus.FAILED, channel.name), attempt,
                             error_type=error_type)
        raise ApplicationError(f"no {notification.channel} device took the message ({len(permanent)} refused)",
                               type=error_type, non_retryable=True)

    async def _call_device(self, notification: SendNotificationInput, channel: Channel, message: OutgoingMessage,
                           marks: DeviceLedger | None) -> SendResult:
        """One device's provider call, its outcome recorded (and counted) before anything else; raises `SendError`."""
        key, started = notification.idempotency_key, time.monotonic()
        call = asyncio.ensure_future(channel.deliver(message))
        try:
            try:
                result = await self._beat(asyncio.shield(call))
            except asyncio.CancelledError:
                # As for one address: let the call finish and record it, so the next attempt need not guess.
                try:
                    result = await call
                except (RetryableSendError, PermanentSendError) as exc:
                    await self._record_device(notification, marks, message, exc)
                    raise asyncio.CancelledError from None
                if marks is not None:
                    await self._beat(marks.complete_device(key, message.device_id, DeviceState.DELIVERED,
                                                           result.provider_message_id))
                raise
        except (RetryableSendError, PermanentSendError) as exc:
            await self._record_device(notification, marks, message, exc)
            raise
        finally:
            self._metrics.send_seconds.labels(notification.channel, channel.name).observe(time.monotonic() - started)
        if marks is not None:
            await self._beat(marks.complete_device(key, message.device_id, DeviceState.DELIVERED,
                                                   result.provider_message_id))
        self._count(notification, result.provider, result.status)
        return result

    async def _record_device(self, notification: SendNotificationInput, marks: DeviceLedger | None,
                             message: OutgoingMessage, exc: RetryableSendError | PermanentSendError) -> None:
        match exc:
            case RetryableSendError(delivery_uncertain=True):
                state = DeviceState.CALLED
            case RetryableSendError():
                state = DeviceState.RETRYING
            case _:
                state = DeviceState.FAILED
        if marks is not None:
            await self._beat(marks.complete_device(notification.idempotency_key, message.device_id, state))
        self._count(notification, exc.provider,
                    exc.error_type if isinstance(exc, RetryableSendError) else f"failed:{exc.error_type}")

    async def _acquire(self, provider: Channel) -> None:
        limiter = getattr(provider, "limiter", None)
        if isinstance(limiter, TokenBucket):
            waited = await self._beat(limiter.acquire())
            self._metrics.rate_limit_wait_seconds.labels(provider.name).inc(waited)

    async def _call_in_order(self, notification: SendNotificationInput, chain: tuple[Channel, ...],
                             message: OutgoingMessage, attempt: int, lease_deadline: float, *,
                             acquired: Channel, pinned: bool, in_doubt: bool = False) -> SendResult:
        """Calls the chain's providers in order until one answers; the attempt holds the lease throughout.

        A provider is passed over when its breaker is open, or after it answered "unavailable" for
        certain (recorded first, with the lease renewed). The last provider's answer, whatever it is,
        is the attempt's. A ``pinned`` chain (one provider that may hold an earlier, uncertain call)
        ignores its breaker: skipping it could only move the send elsewhere. ``in_doubt``: the
        earlier call may still have delivered (resent blindly, ``at_least_once``), so a retryable
        answer now is recorded ``uncertain``, which keeps later attempts pinned too.
        """
        passed_over: Channel | None = None
        breakers: list[CircuitBreaker] = []
        for index, provider in enumerate(chain):
            breaker = None if pinned else self._breakers.get((notification.channel, provider.name))
            if breaker is not None:
                breakers.append(breaker)
                if not breaker.allow():
                    passed_over = provider
                    continue
            if passed_over is not None:
                self._metrics.failovers.labels(notification.channel, passed_over.name, provider.name).inc()
                activity.logger.info("notification_failover channel=%s from=%s to=%s", notification.channel,
                                     passed_over.name, provider.name)
            if provider is not acquired:
                await self._acquire(provider)
            if time.monotonic() + provider.call_timeout_seconds > lease_deadline:
                # The call could outlive the lease, and then another attempt could send too.
                if breaker is not None:
                    breaker.released()
                await self._complete(notification, LedgerState.RETRYING, SendResult(SendStatus.FAILED, provider.name),
                                     attempt)
                raise ApplicationError("the lease ran out before the provider call", type=LEASE_TOO_SHORT)
            try:
                return await self._deliver(notification, provider, message, attempt, breaker=breaker,
                                           failover=index < len(chain) - 1, in_doubt=in_doubt)
            except _Unavailable as unavailable:
                lease_deadline = unavailable.lease_deadline
                passed_over = provider
        # Every provider left was behind an open circuit: nothing was called since the last answer.
        await self._complete(notification, LedgerState.RETRYING, SendResult(SendStatus.FAILED, chain[0].name), attempt)
        self._count(notification, chain[-1].name, CIRCUITS_OPEN)
        wait = min((b.seconds_until_probe() for b in breakers), default=1.0)
        raise ApplicationError(f"every {notification.channel} provider is unavailable (circuits open)",
                               type=CIRCUITS_OPEN, next_retry_delay=timedelta(seconds=max(wait, 1.0)))

    async def _reserve(self, notification: SendNotificationInput, attempt: int,
                       caps: CapSet, address: str = "", topic: Topic | None = None) -> tuple[Reservation, float]:
        """Reserves, waiting out another attempt's lease; returns the answer and this attempt's lease deadline."""
        assert self._ledger is not None
        # The current key's form is recorded; the others (older keys, legacy) only match suppressions.
        hashed, *others = (self._hasher.forms(notification.channel, address) if address else ()) or ("",)
        while True:
            asked_at = time.monotonic()
            reservation = await self._beat(self._ledger.reserve(ReserveRequest(
                idempotency_key=notification.idempotency_key,
                customer_id=notification.customer.id,
                channel=notification.channel,
                timezone=notification.customer.timezone or "UTC",
                quiet_hours=self._policy.quiet_hours if notification.quiet_hours is None else notification.quiet_hours,
                daily_cap=self._policy.daily_cap if notification.daily_cap is None else notification.daily_cap,
                on_cap=notification.on_cap,
                now_epoch_seconds=time.time(),
                attempt=attempt,
                lease_seconds=self._policy.lease_seconds,
                caps=str(caps),
                priority=notification.priority,
                cap_reserve=self._policy.cap_reserve,
                address_hash=hashed,
                other_address_hashes=list(others),
                topic=topic.name if topic is not None else "",
                topic_default=asked_default(topic),
            )))
            if reservation.decision is not ReserveDecision.BUSY:
                # Counted from before the request left, so this attempt's view of the lease ends first.
                return reservation, asked_at + self._policy.lease_seconds - self._policy.lease_margin_seconds
            self._metrics.lease_waits.labels(notification.channel).inc()
            # Ask again well before the lease ends: the holder usually reports long before then.
            await self._beat(asyncio.sleep(_seconds_until(reservation.not_before, self._policy.lease_poll_seconds)))

    def _settles(self, channel: Channel) -> bool:
        """Whether an uncertain call to ``channel`` can be settled (its provider is asked or reports), so a
        resend after "it did not arrive" leaves no doubt; otherwise only the policy decides, blindly."""
        return channel.reconciles or (isinstance(self._ledger, CallMarkingLedger)
                                      and self._policy.report_window_seconds > 0
                                      and channel.name in self._policy.providers_reporting)

    async def _resolve_uncertain(self, notification: SendNotificationInput, channel: Channel,
                                 message: OutgoingMessage, reservation: Reservation,
                                 attempt: int) -> SendResult | None:
        """An earlier attempt held the lease and never reported: did its message arrive?"""
        if channel.reconciles:
            earlier = await self._beat(channel.reconcile(message, reservation.previous_started_epoch_seconds))
            if earlier is not None:
                await self._complete(notification, LedgerState.DELIVERED, earlier, attempt)
                self._metrics.uncertain.labels(notification.channel, channel.name, "reconciled_delivered").inc()
                self._count(notification, earlier.provider, SendStatus.DUPLICATE)
                return SendResult(SendStatus.DUPLICATE, earlier.provider, earlier.provider_message_id)
            self._metrics.uncertain.labels(notification.channel, channel.name, "reconciled_missing").inc()
            return None
        if isinstance(self._ledger, CallMarkingLedger) and self._policy.report_window_seconds > 0 \
                and channel.name in self._policy.providers_reporting:
            return await self._resolve_by_report(notification, channel, reservation, attempt)
        if self._policy.uncertain_delivery is UncertainDelivery.AT_LEAST_ONCE:
            self._metrics.uncertain.labels(notification.channel, channel.name, "sent_again").inc()
            return None
        await self._complete(notification, LedgerState.UNCERTAIN, SendResult(SendStatus.UNCERTAIN, channel.name),
                             attempt)
        self._metrics.uncertain.labels(notification.channel, channel.name, "not_sent_again").inc()
        self._count(notification, channel.name, SendStatus.UNCERTAIN)
        return SendResult(SendStatus.UNCERTAIN, channel.name)

    async def _resolve_by_report(self, notification: SendNotificationInput, channel: Channel,
                                 reservation: Reservation, attempt: int) -> SendResult | None:
        """Waits, up to the report window after the uncertain call, for the provider's report on it.

        A report (processed, delivered, deferred, bounce, dropped...) names the send's key, so the
        provider accepted that call: record it delivered. None within the window: it did not, and
        this attempt sends again (still one accepted call per key).
        """
        assert isinstance(self._ledger, CallMarkingLedger)
        ledger = self._ledger
        deadline = reservation.previous_started_epoch_seconds + self._policy.report_window_seconds
        while True:
            seen, message_id = await self._beat(ledger.reported(notification.idempotency_key))
            if seen:
                result = SendResult(SendStatus.SENT, channel.name, message_id)
                await self._complete(notification, LedgerState.DELIVERED, result, attempt)
                self._metrics.uncertain.labels(notification.channel, channel.name, "reported_delivered").inc()
                self._count(notification, channel.name, SendStatus.DUPLICATE)
                return SendResult(SendStatus.DUPLICATE, channel.name, message_id)
            remaining = deadline - time.time()
            if remaining <= 0:
                self._metrics.uncertain.labels(notification.channel, channel.name, "unreported_sent_again").inc()
                return None
            await self._beat(asyncio.sleep(min(remaining, self._policy.report_poll_seconds)))

    async def _deliver(self, notification: SendNotificationInput, channel: Channel, message: OutgoingMessage,
                       attempt: int, *, breaker: CircuitBreaker | None = None, failover: bool = False,
                       in_doubt: bool = False) -> SendResult:
        with tracing.span(f"{channel.name} deliver", kind=SpanKind.CLIENT, attributes={
                tracing.PROVIDER: channel.name, tracing.CHANNEL: notification.channel,
                tracing.JOURNEY: notification.journey_id, tracing.STEP: notification.step_id,
                tracing.WORKFLOW_ID: notification.workflow_id, "eventflow.attempt": attempt}) as span:
            try:
                result = await self._call_provider(notification, channel, message, attempt, breaker=breaker,
                                                   failover=failover, in_doubt=in_doubt)
            except ApplicationError as exc:
                if span is not None:
                    span.set_attribute(tracing.OUTCOME, exc.type or "failed")
                raise
            if span is not None:
                span.set_attribute(tracing.OUTCOME, result.status.value)
            return result

    async def _call_provider(self, notification: SendNotificationInput, channel: Channel, message: OutgoingMessage,
                             attempt: int, *, breaker: CircuitBreaker | None = None,
                             failover: bool = False, in_doubt: bool = False) -> SendResult:
        """One provider call between its mark and its recorded answer.

        With ``failover``, an answer that is certainly "unavailable" (nothing delivered) is recorded
        as such with the lease renewed, and `_Unavailable` tells the caller to try the next provider.
        """
        try:
            return await self._marked_call(notification, channel, message, attempt, failover=failover,
                                           breaker=breaker, in_doubt=in_doubt)
        finally:
            if breaker is not None:
                # Whatever `_marked_call` told the breaker stands; a call that never gave a verdict frees the probe.
                breaker.released()

    async def _marked_call(self, notification: SendNotificationInput, channel: Channel, message: OutgoingMessage,
                           attempt: int, *, breaker: CircuitBreaker | None, failover: bool,
                           in_doubt: bool) -> SendResult:
        if isinstance(self._ledger, CallMarkingLedger) and not await self._beat(
                self._ledger.mark_calling(notification.idempotency_key, attempt, channel.name)):
            # Another attempt took the send over (this one's lease ran out): it decides, not this one.
            raise ApplicationError("the lease ran out before the provider call", type=LEASE_TOO_SHORT)
        call_started = time.monotonic()
        call = asyncio.ensure_future(channel.deliver(message))
        try:
            result = await self._beat(asyncio.shield(call))
        except asyncio.CancelledError:
            # Temporal cancelled this attempt (it timed out, or the worker is stopping) while the
            # provider call runs on: wait for the call and record what it did, so the next attempt
            # does not have to guess.
            try:
                result = await call
            except RetryableSendError as exc:
                # The provider's answer is known: record it, so the next attempt does not count it uncertain.
                state = LedgerState.UNCERTAIN if exc.delivery_uncertain or in_doubt else LedgerState.RETRYING
                await self._complete(notification, state, SendResult(SendStatus.FAILED, exc.provider), attempt)
                raise asyncio.CancelledError from None
            except PermanentSendError as exc:
                await self._complete(notification, LedgerState.FAILED, SendResult(SendStatus.FAILED, exc.provider),
                                     attempt, error_type=exc.error_type)
                raise asyncio.CancelledError from None
            await self._complete(notification, LedgerState.DELIVERED, result, attempt)
            raise
        except RetryableSendError as exc:
            if breaker is not None:
                breaker.failed()
            self._count(notification, exc.provider, exc.error_type)
            if failover and not exc.delivery_uncertain:
                await self._hand_on(notification, attempt)
            state = LedgerState.UNCERTAIN if exc.delivery_uncertain or in_doubt else LedgerState.RETRYING
            await self._complete(notification, state, SendResult(SendStatus.FAILED, exc.provider), attempt)
            delay = timedelta(seconds=exc.retry_after_seconds) if exc.retry_after_seconds is not None else None
            raise ApplicationError(mask_contact_details(str(exc)), type=exc.error_type,
                                   next_retry_delay=delay) from masked_cause(exc)
        except PermanentSendError as exc:
            if breaker is not None:
                breaker.succeeded()  # the provider answered; it refused this message, not the service
            await self._complete(notification, LedgerState.FAILED, SendResult(SendStatus.FAILED, exc.provider),
                                 attempt, error_type=exc.error_type)
            self._count(notification, exc.provider, f"failed:{exc.error_type}")
            raise ApplicationError(mask_contact_details(str(exc)), type=exc.error_type,
                                   non_retryable=True) from masked_cause(exc)
        finally:
            self._metrics.send_seconds.labels(notification.channel, channel.name).observe(
                time.monotonic() - call_started, exemplar=tracing.exemplar())
        if breaker is not None:
            breaker.succeeded()
        await self._complete(notification, LedgerState.DELIVERED, result, attempt)
        self._count(notification, result.provider, result.status)
        return result

    async def _hand_on(self, notification: SendNotificationInput, attempt: int) -> None:
        """Records a certain "unavailable" answer and renews the lease for the next provider.

        Raises `_Unavailable` with the renewed lease's end (counted from before the request left, as
        in `_reserve`); returns when the lease was lost, so the answer is recorded the ordinary way.
        """
        assert isinstance(self._ledger, CallMarkingLedger)
        asked_at = time.monotonic()
        while True:
            try:
                renewed = await self._beat(self._ledger.record_unavailable(
                    notification.idempotency_key, attempt, self._policy.lease_seconds))
                break
            except LedgerUnavailableError as exc:
                # Answers first: until this is recorded the call counts as made, so ask until it is.
                self._metrics.ledger_retries.labels(notification.channel).inc()
                activity.logger.warning("ledger_unavailable_retrying error=%s", exc)
                await self._beat(asyncio.sleep(0.5))
                asked_at = time.monotonic()
        if renewed:
            raise _Unavailable(asked_at + self._policy.lease_seconds - self._policy.lease_margin_seconds)

    async def _release(self, notification: SendNotificationInput, attempt: int) -> None:
        if not isinstance(self._ledger, CallMarkingLedger):
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._ledger.release(notification.idempotency_key, attempt)),
                                   timeout=self._policy.heartbeat_interval_seconds * 2)
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own; the next attempt sends
            activity.logger.warning("lease_release_failed error=%s", type(exc).__name__)

    async def _complete(self, notification: SendNotificationInput, outcome: LedgerState, result: SendResult,
                        attempt: int, *, error_type: str = "") -> None:
        if self._ledger is None:
            return
        completion = Completion(
            idempotency_key=notification.idempotency_key,
            customer_id=notification.customer.id,
            channel=notification.channel,
            outcome=outcome,
            provider=result.provider,
            provider_message_id=result.provider_message_id,
            error_type=error_type,
            attempt=attempt,
        )
        ledger, step = self._ledger, _funnel_step(notification)
        # A provider's answer is recorded before anything else the attempt does: while the ledger is
        # away (its database restarting), wait and ask again rather than leave the answer unrecorded.
        waited = 0
        while True:
            try:
                if isinstance(ledger, FunnelLedger) and step is not None:
                    # The funnel's event rides in the delivery's own write: no extra call per send.
                    await self._beat(ledger.complete_step(completion, step))
                else:
                    await self._beat(ledger.complete(completion))
                return
            except LedgerUnavailableError as exc:
                waited += 1
                self._metrics.ledger_retries.labels(notification.channel).inc()
                activity.logger.warning("ledger_unavailable_retrying attempt=%d error=%s", waited, exc)
                await self._beat(asyncio.sleep(min(0.2 * 2 ** min(waited, 5), 5.0)))


def _funnel_step(notification: SendNotificationInput) -> FunnelStep | None:
    """The journey step a send belongs to, from its rendering context (None outside a journey)."""
    if not notification.journey_id or not notification.workflow_id:
        return None
    journey = notification.context.get("journey")
    journey = journey if isinstance(journey, dict) else {}
    variants = journey.get("variants")
    version = journey.get("version")
    return FunnelStep(journey_id=notification.journey_id, journey_version=version if isinstance(version, int) else 0,
                      workflow_id=notification.workflow_id, step_id=notification.step_id,
                      variants={str(k): str(v) for k, v in variants.items()} if isinstance(variants, dict) else {})


def _caps_for(notification: SendNotificationInput, defaults: CapSet) -> CapSet:
    """The worker's caps overridden by the send's; unreadable caps (a snapshot no loader checked) are permanent."""
    if notification.caps is None:
        return defaults
    try:
        return defaults.overridden_by(CapSet.parse(notification.caps))
    except CapSpecError as exc:
        raise ApplicationError(f"caps {notification.caps!r}: {exc}", type="InvalidCaps", non_retryable=True) from exc


def _seconds_until(instant: str | None, ceiling: float) -> float:
    """How long until ``instant`` (ISO 8601) by this host's clock, within ``[0.05, ceiling]``."""
    if not instant:
        return ceiling
    remaining = datetime.fromisoformat(instant).timestamp() - time.time()
    return min(max(remaining + 0.05, 0.05), ceiling)


@dataclass(frozen=True)
class RenderedParts:
    """A notification's rendered parts: what the channel is handed, less the address.

    Attributes:
        html: the HTML alternative (autoescaped, CSS inlined); None without an ``html`` part or
            when a provider template is used.
        variables: the provider template's variables, rendered.
    """

    body: str
    subject: str | None = None
    html: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


async def render_notification(notification: SendNotificationInput) -> RenderedParts:
    """Renders every part in one trip off the event loop, within the sandbox's limits; raises `TemplateRenderError`.

    The send activity and ``eventflow journeys render`` both render through this, so what an author
    checks is what a customer gets.
    """
    parts = [RenderPart(notification.body_template)]
    if notification.subject_template:
        parts.append(RenderPart(notification.subject_template))
    with_html = bool(notification.html_template) and not notification.provider_template_id
    if with_html:
        parts.append(RenderPart(notification.html_template or "", html=True))
    names = list(notification.template_variable_templates)
    parts += [RenderPart(notification.template_variable_templates[name]) for name in names]
    rendered = iter(await render_parts_async(notification.template_id, parts, notification.context))
    body = next(rendered)
    subject = next(rendered) if notification.subject_template else None
    html = next(rendered) if with_html else None
    variables = {name: next(rendered) for name in names}
    return RenderedParts(body, subject, html, variables)


async def _render(notification: SendNotificationInput, address: str) -> OutgoingMessage:
    """`render_notification` into the channel's message; any failure is permanent."""
    try:
        parts = await render_notification(notification)
    except TemplateRenderError as exc:
        # Templates now see the profile's address: a failure may quote it (int('ada@example.com')).
        raise ApplicationError(mask_contact_details(str(exc)), type="TemplateRenderError",
                               non_retryable=True) from masked_cause(exc)
    return OutgoingMessage(
        idempotency_key=notification.idempotency_key,
        channel=notification.channel,
        to=address,
        body=parts.body,
        subject=parts.subject,
        template_id=notification.template_id,
        locale=notification.locale,
        workflow_id=notification.workflow_id,
        provider_template_id=notification.provider_template_id,
        template_variables=dict(parts.variables),
        customer_id=notification.customer.id,
        step_id=notification.step_id,
        html=parts.html,
    )


async def _heartbeating(call: Awaitable[T], interval_seconds: float) -> T:
    """Awaits ``call``, heartbeating meanwhile so a crashed worker is noticed within the heartbeat timeout."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval_seconds)
            if done:
                return task.result()
            if activity.in_activity():
                activity.heartbeat()
    finally:
        task.cancel()
        # An outcome nobody awaits any more (this wait was cancelled) is read here, not dropped as
        # "Future exception was never retrieved".
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.debug("abandoned_call_failed", error_type=type(error).__name__)
