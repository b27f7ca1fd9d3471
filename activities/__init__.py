"""Channel activities: the send activity and the channels it delivers through."""

from activities.channels import Channel, OutgoingMessage
from activities.notifications import SendNotificationInput, SendResult
from activities.outbox import OutboxChannel, read_outbox
from activities.send import SEND_NOTIFICATION, NotificationActivities

__all__ = [
    "SEND_NOTIFICATION",
    "Channel",
    "NotificationActivities",
    "OutboxChannel",
    "OutgoingMessage",
    "SendNotificationInput",
    "SendResult",
    "read_outbox",
]
