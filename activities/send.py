"""The send activity: picks the recipient address, renders the template, hands it to the channel."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import Channel, OutgoingMessage
from activities.notifications import SendNotificationInput, SendResult
from activities.rendering import TemplateRenderError, render

SEND_NOTIFICATION = "send_notification"


class NotificationActivities:
    """Activity implementations bound to the configured channels (one per channel name)."""

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self._channels = dict(channels)

    @activity.defn(name=SEND_NOTIFICATION)
    async def send_notification(self, notification: SendNotificationInput) -> SendResult:
        channel = self._channels.get(notification.channel)
        if channel is None:
            raise ApplicationError(f"no channel configured for {notification.channel!r}",
                                   type="ChannelNotConfigured", non_retryable=True)
        address = notification.customer.email if notification.channel == "email" else notification.customer.phone
        if not address:
            raise ApplicationError(f"customer has no address for {notification.channel}",
                                   type="MissingAddress", non_retryable=True)
        try:
            body = render(notification.template_id, notification.body_template, notification.context)
            subject = (render(notification.template_id, notification.subject_template, notification.context)
                       if notification.subject_template else None)
        except TemplateRenderError as exc:
            raise ApplicationError(str(exc), type="TemplateRenderError", non_retryable=True) from exc
        result = await channel.deliver(OutgoingMessage(
            idempotency_key=notification.idempotency_key,
            channel=notification.channel,
            to=address,
            body=body,
            subject=subject,
            template_id=notification.template_id,
            locale=notification.locale,
            workflow_id=notification.workflow_id,
        ))
        activity.logger.info("notification_%s channel=%s provider=%s template=%s", result.status,
                             notification.channel, result.provider, notification.template_id)
        return result
