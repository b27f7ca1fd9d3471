"""``eventflow webhooks``: provider delivery reports and inbound keywords, verified and handed to Kafka.

`server.WebhookServer` verifies (`verify`), parses (`parsing`) and hands each request's records
to the feedback topic (`handoff`) before answering; `app.run_webhooks` runs it with the feedback
consumer (`consumer.feedback`) that applies the topic to the ledger, the journeys and the
suppression list.
"""

from eventflow.webhooks.handoff import HandoffError, KafkaHandoff
from eventflow.webhooks.server import WebhookMetrics, WebhookServer
from eventflow.webhooks.verify import SendGridVerifier, TwilioVerifier

__all__ = ["HandoffError", "KafkaHandoff", "SendGridVerifier", "TwilioVerifier", "WebhookMetrics", "WebhookServer"]
