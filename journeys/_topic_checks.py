"""The topic check of sending steps: each send's ``topic`` is declared and may go on its channels.

A send (or a digest's send) may name a subscription topic from the journeys folder's
``topics.yaml`` (`journeys.topics`); the customer's consent to that topic on the channel then
decides the send. A topic the file does not declare, or one not offered on the send's channel or
its fallback, would make every such send fail or skip at run time, so it is refused here, at the
``file:line`` of the step's ``topic``.
"""

from __future__ import annotations

from activities.topics import TopicCatalog
from journeys.problems import Report
from journeys.steps import DigestStep, SendStep, StepPath
from journeys.topics import send_topic_problems


def check_topic(report: Report, sender: SendStep | DigestStep, where: StepPath, topics: TopicCatalog) -> None:
    """Reports the problems of ``sender``'s topic; ``where`` is the document path of its send options."""
    options = sender.send
    if options.topic is None:
        return
    channels = [options.channel] + ([options.fallback] if options.fallback else [])
    for problem in send_topic_problems(topics, options.topic, channels):
        report.add((*where, "topic"), problem)
