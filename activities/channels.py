"""The channel interface every provider implements, and the rendered message it delivers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from activities.notifications import SendResult


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider.

    Attributes:
        provider_template_id: a template approved at the provider (Twilio Content API ``content_sid``
            for WhatsApp, a SendGrid dynamic template id); when set, ``template_variables`` fill it.
        template_variables: rendered variables for the provider template.
        html: the HTML alternative of ``body`` (email only; CSS already inlined), None for text only.
        sender: overrides the configured from address/number, when the template says so.
        customer_id, step_id: whose send and which journey step, carried to the provider (SendGrid
            ``custom_args``, Twilio status-callback parameters) so delivery reports find the send.
        headers: extra email headers (``List-Unsubscribe``, ``List-Unsubscribe-Post``); email
            channels send them, the others ignore them.
        link: a push notification's deep link (an https URL or an app's own scheme), "" for none.
        data: a push notification's key-value data for the app or service worker, rendered.
        device_id: for a push channel, which of the customer's devices ``to`` is (`activities.push.Device`).

    For the push channels ``subject`` is the notification's title and ``to`` the device's token
    (FCM) or subscription JSON (Web Push).
    """

    idempotency_key: str
    channel: str
    to: str
    body: str
    subject: str | None = None
    template_id: str = ""
    locale: str = ""
    workflow_id: str = ""
    provider_template_id: str = ""
    template_variables: Mapping[str, str] = field(default_factory=dict)
    sender: str = ""
    customer_id: str = ""
    step_id: str = ""
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    link: str = ""
    data: Mapping[str, str] = field(default_factory=dict)
    device_id: str = ""


class Channel(Protocol):
    """Delivers one message; raises `activities.errors.RetryableSendError` or `PermanentSendError`."""

    name: str

    @property
    def reconciles(self) -> bool:
        """Whether `reconcile` can tell that an earlier attempt's message arrived (Twilio's message
        list can; SendGrid's Mail Send cannot)."""
        ...

    @property
    def call_timeout_seconds(self) -> float:
        """The longest one `deliver` call may take before the provider client gives up."""
        ...

    async def deliver(self, message: OutgoingMessage) -> SendResult:
        """Hands the message to the provider once."""
        ...

    async def reconcile(self, message: OutgoingMessage, since_epoch_seconds: float) -> SendResult | None:
        """Asks the provider whether an earlier, interrupted attempt delivered ``message``.

        Returns the earlier result when the provider knows it, ``None`` when it did not arrive or
        the provider offers no way to tell (``reconciles`` is false).
        """
        ...


#: What serves one channel: a provider, or several in failover order (the first is the primary).
ChannelProviders = Channel | tuple[Channel, ...]


def providers_of(serving: ChannelProviders) -> tuple[Channel, ...]:
    """The providers of a channel, in failover order."""
    match serving:
        case tuple():
            return serving
        case _:
            return (serving,)
