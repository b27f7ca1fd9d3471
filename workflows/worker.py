"""The worker process: runs the journey interpreter, customer preferences and the channel activities."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.addresses import UNKEYED, AddressHasher
from activities.channels import ChannelProviders
from activities.circuit import CircuitPolicy
from activities.contact import ContactDirectory
from activities.ledger import DeliveryLedger
from activities.links import MessageLinks
from activities.metrics import SendMetrics
from activities.push import DeviceDirectory
from activities.send import NotificationActivities, SendPolicy
from activities.topics import TopicCatalog
from activities.webhook import WebhookActivities, WebhookSecrets
from activities.whatsapp import InboundWindows
from workflows.address_book import AddressContacts
from workflows.broadcast import BroadcastWorkflow
from workflows.journey import JourneyWorkflow
from workflows.preferences import CustomerPreferences
from workflows.preferences_client import PreferencesStore, ProfileDirectory
from workflows.queues import CHANNELS, send_task_queue
from workflows.tombstone import CustomerTombstone

#: Eventflow's own packages are imported once per process, not once per workflow instance.
#: The default sandbox re-executes every module it does not pass through for each workflow it
#: creates: for the interpreter that was ``workflows/__init__`` with journey, sending, webhooks and
#: their dataclasses, about 80 % of the worker's busy time under load (ADR "First-party modules
#: through the sandbox"). They hold no module-level mutable state; the replay tests run the recorded
#: histories under the default, fully re-importing sandbox, so a non-deterministic call is still caught there.
FIRST_PARTY_PACKAGES = ("workflows", "journeys", "events", "activities", "eventflow")
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*FIRST_PARTY_PACKAGES))
#: What ``eventflow worker`` runs by default (ADR "Workflows run unsandboxed in production, sandboxed
#: in tests"): the sandbox's run-time checks cost about a tenth of the worker's CPU per notification,
#: and every workflow path the tests and the recorded histories take runs under `WORKFLOW_RUNNER`.
UNSANDBOXED_RUNNER = UnsandboxedWorkflowRunner()

WORKFLOWS: Sequence[type] = (JourneyWorkflow, CustomerPreferences, AddressContacts, CustomerTombstone,
                             BroadcastWorkflow)
#: Given the send activities, the activities that broadcast with them (the customer store's; store/).
BroadcastActivitiesFactory = Callable[[NotificationActivities], Sequence[Callable[..., Any]]]


@dataclass(frozen=True)
class WorkerLimits:
    """How much one worker replica takes on; scale out by adding replicas on the same task queue."""

    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    #: Long polls for workflow tasks; the SDK gives a fifth of them to new workflows (its default
    #: ``nonsticky_to_sticky_poll_ratio``), so with its default of 5 one poll took every new journey.
    workflow_task_pollers: int = 10
    activity_task_pollers: int = 10
    graceful_shutdown_seconds: float = 20.0


class JourneyWorkers:
    """The journey worker and one send worker per channel, run and drained together.

    Use as ``async with build_worker(...):``; sends of journeys started before the per-channel
    queues existed still arrive on the journeys' own queue, which the journey worker also serves.
    """

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = tuple(workers)

    async def __aenter__(self) -> JourneyWorkers:
        entered: list[Worker] = []
        try:
            for worker in self.workers:
                await worker.__aenter__()
                entered.append(worker)
        except BaseException:
            await asyncio.gather(*(w.__aexit__(None, None, None) for w in entered))
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(w.__aexit__(None, None, None) for w in self.workers))


def with_send_queues(client: Client, task_queue: str, journey_worker: Worker,
                     activities: Sequence[Callable[..., Any]]) -> JourneyWorkers:
    """``journey_worker`` plus workers running ``activities`` on every channel's send queue (simulations, tests)."""
    return JourneyWorkers([journey_worker, *(
        Worker(client, task_queue=send_task_queue(task_queue, channel), activities=list(activities))
        for channel in CHANNELS)])


def build_worker(client: Client, task_queue: str, channels: Mapping[str, ChannelProviders],
                 *, max_concurrent_activities: int = 100, limits: WorkerLimits | None = None,
                 ledger: DeliveryLedger | None = None, metrics: SendMetrics | None = None,
                 policy: SendPolicy | None = None,
                 channel_rates_per_second: Mapping[str, float] | None = None,
                 webhooks: WebhookActivities | None = None,
                 contacts: ContactDirectory | None = None,
                 devices: DeviceDirectory | None = None,
                 circuit: CircuitPolicy | None = None,
                 broadcasts: BroadcastActivitiesFactory | None = None,
                 hasher: AddressHasher = UNKEYED,
                 inbound: InboundWindows | None = None,
                 topics: TopicCatalog | None = None,
                 links: MessageLinks | None = None,
                 workflow_runner: WorkflowRunner = WORKFLOW_RUNNER) -> JourneyWorkers:
    """Workers for every Eventflow workflow and activity.

    Args:
        ledger: the delivery ledger and preference gate; by default the ``CustomerPreferences``
            workflows on this task queue.
        metrics: where send metrics go (a fresh registry when omitted).
        policy: default quiet hours and daily cap.
        channel_rates_per_second: per channel, the provider's rate limit, enforced by Temporal
            across all replicas on the channel's send queue (absent: no server-side limit).
        webhooks: the webhook activity (on the journeys' queue); by default one that allows no host.
        contacts: where sends read the customer's contact points; by default the profile in the
            ``CustomerPreferences`` workflows (activities/contact.py).
        devices: where push sends read the customer's devices (the customer store); None: push
            sends find no device (``no_contact``).
        circuit: the circuit breakers of channels with failover providers.
        broadcasts: the ``Broadcast`` workflow's activities (only with the customer store).
        hasher: names the addresses sends go to, for the suppression check (unkeyed by default).
        inbound: when customers last wrote on WhatsApp (the customer store); without it no
            24-hour window counts as open, so WhatsApp sends go as templates or not at all.
        topics: the declared subscription topics (journeys/topics.yaml); none by default.
        links: the preference center's links for templates and List-Unsubscribe headers (None: none).
        workflow_runner: how workflow code runs; the checking sandbox unless the caller chose otherwise.
    """
    limits = limits or WorkerLimits(max_concurrent_activities=max_concurrent_activities)
    notifications = NotificationActivities(
        channels, ledger=ledger if ledger is not None else PreferencesStore(client, task_queue),
        metrics=metrics, policy=policy, contacts=contacts if contacts is not None else ProfileDirectory(client),
        devices=devices, circuit=circuit, hasher=hasher, inbound=inbound, topics=topics, links=links)
    rates = channel_rates_per_second or {}
    shutdown = timedelta(seconds=limits.graceful_shutdown_seconds)
    journeys = Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner,
        activities=[notifications.send_notification,
                    (webhooks or WebhookActivities((), WebhookSecrets(None, {}))).call_webhook,
                    *(broadcasts(notifications) if broadcasts is not None else ())],
        max_concurrent_activities=limits.max_concurrent_activities,
        max_concurrent_workflow_tasks=limits.max_concurrent_workflow_tasks,
        max_concurrent_workflow_task_polls=limits.workflow_task_pollers,
        max_concurrent_activity_task_polls=limits.activity_task_pollers,
        graceful_shutdown_timeout=shutdown,
    )
    sends = [Worker(
        client,
        task_queue=send_task_queue(task_queue, channel),
        activities=[notifications.send_notification],
        max_concurrent_activities=limits.max_concurrent_activities,
        max_task_queue_activities_per_second=rates.get(channel),
        max_concurrent_activity_task_polls=limits.activity_task_pollers,
        graceful_shutdown_timeout=shutdown,
    ) for channel in sorted(channels)]
    return JourneyWorkers([journeys, *sends])
