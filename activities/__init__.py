"""Channel activities: the send activity, the channels it delivers through, and the failure taxonomy."""

from activities.channels import Channel, OutgoingMessage
from activities.email_sendgrid import SendGridChannel, SendGridConfig
from activities.errors import (
    PERMANENT_ERROR_TYPES,
    InvalidAddressError,
    PermanentSendError,
    ProviderAuthError,
    RateLimitedError,
    RecipientUnsubscribedError,
    RetryableSendError,
    SendError,
)
from activities.ledger import Completion, DeliveryLedger, Reservation, ReserveRequest
from activities.metrics import SendMetrics
from activities.notifications import SendNotificationInput, SendResult
from activities.outbox import OutboxChannel, read_outbox
from activities.ratelimit import TokenBucket
from activities.send import SEND_NOTIFICATION, NotificationActivities, SendPolicy
from activities.sms_twilio import TwilioChannel, TwilioClient, TwilioConfig

__all__ = [
    "PERMANENT_ERROR_TYPES",
    "SEND_NOTIFICATION",
    "Channel",
    "Completion",
    "DeliveryLedger",
    "InvalidAddressError",
    "NotificationActivities",
    "OutboxChannel",
    "OutgoingMessage",
    "PermanentSendError",
    "ProviderAuthError",
    "RateLimitedError",
    "RecipientUnsubscribedError",
    "Reservation",
    "ReserveRequest",
    "RetryableSendError",
    "SendError",
    "SendGridChannel",
    "SendGridConfig",
    "SendMetrics",
    "SendNotificationInput",
    "SendPolicy",
    "SendResult",
    "TokenBucket",
    "TwilioChannel",
    "TwilioClient",
    "TwilioConfig",
    "read_outbox",
]
