"""``customers forget`` leaves no ``AddressContacts`` link to the customer (the workflow layout, real Temporal).

The links are found from the profile's numbers in every hash form (legacy unkeyed, the old key, the
current key) and from the customer's suppressions; another customer of the same address keeps theirs,
and the runs whose histories held the forgotten id are deleted.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from temporalio.client import Client
from temporalio.worker import Worker

from activities.addresses import AddressHasher
from core.signing import SigningKeys
from eventflow.commands.customers import forget_customer
from tests.harness import eventually
from workflows.address_book import OWNERS_QUERY, AddressContacts, AddressInput, ContactSeen, address_workflow_id
from workflows.preferences import CustomerPreferences, PreferencesInput, preferences_workflow_id
from workflows.profile import CustomerProfile
from workflows.suppression import Suppression, SuppressionReason, suppression_key
from workflows.tombstone import CustomerTombstone
from workflows.worker import WORKFLOW_RUNNER

OLD, NEW = (base64.b64encode(bytes(range(start, start + 32))).decode() for start in (0, 64))
ROTATED = AddressHasher(SigningKeys.parse(f"2026-01={OLD},2026-07={NEW}", "2026-07"))


def _number(unique: str, prefix: str) -> str:
    return prefix + str(int(hashlib.sha256(unique.encode()).hexdigest(), 16))[:7]


async def _owners(client: Client, workflow_id: str) -> list[str]:
    return await client.get_workflow_handle(workflow_id).query(OWNERS_QUERY, result_type=list[str])


async def test_forget_removes_the_customer_from_every_address_link_and_keeps_the_others(
        temporal_client: Client, unique: str) -> None:
    queue, customer, neighbour = f"forget-links-{unique}", f"gone-{unique}", f"stays-{unique}"
    phone, whatsapp, suppressed = (_number(unique, p) for p in ("+49151", "+49160", "+49170"))
    legacy, old_key = AddressHasher(None), AddressHasher(SigningKeys.parse(f"2026-01={OLD}"))
    suppressed_hash = ROTATED.hash("whatsapp", suppressed)
    # Links as the feedback consumer made them over time: before keys, under the old key, under the current
    # one, and one known only by a suppression's hash (a number no longer in the profile).
    linked = {address_workflow_id("sms", legacy.hash("sms", phone)): "sms",
              address_workflow_id("sms", old_key.hash("sms", phone)): "sms",
              address_workflow_id("whatsapp", ROTATED.hash("whatsapp", whatsapp)): "whatsapp",
              address_workflow_id("whatsapp", suppressed_hash): "whatsapp"}
    async with Worker(temporal_client, task_queue=queue, workflow_runner=WORKFLOW_RUNNER,
                      workflows=[CustomerPreferences, AddressContacts, CustomerTombstone]):
        runs: dict[str, str | None] = {}
        for workflow_id, channel in linked.items():
            handle = await temporal_client.start_workflow(
                AddressContacts.run, AddressInput(channel, workflow_id.rpartition(":")[2]), id=workflow_id,
                task_queue=queue)
            await handle.signal("contact_seen", ContactSeen(customer))
            await handle.signal("contact_seen", ContactSeen(neighbour))
            runs[workflow_id] = handle.result_run_id
        unrelated = address_workflow_id("sms", ROTATED.hash("sms", _number(unique, "+49152")))
        await temporal_client.start_workflow(AddressContacts.run, AddressInput("sms", "x", [neighbour]), id=unrelated,
                                             task_queue=queue)
        await temporal_client.start_workflow(CustomerPreferences.run, PreferencesInput(
            customer, profile=CustomerProfile(phone=phone, whatsapp=whatsapp),
            suppressions={suppression_key("whatsapp", suppressed_hash): Suppression(
                "whatsapp", suppressed_hash, SuppressionReason.STOP, "2026-11-01T00:00:00+00:00")}),
            id=preferences_workflow_id(customer), task_queue=queue)
        for workflow_id in linked:
            await eventually(functools.partial(_has, temporal_client, workflow_id, customer), message="linked")

        report = await forget_customer(temporal_client, customer_id=customer, task_queue=queue, hasher=ROTATED)

        assert report.address_links == len(linked) and not report.address_links_pending, report
        # The four runs that held the customer's id (each workflow continued as new) and the preferences:
        # the server accepted their deletion (it removes a closed run's history within seconds to minutes).
        assert report.executions_deleted == len(linked) + 1
        for workflow_id in linked:
            assert await _owners(temporal_client, workflow_id) == [neighbour], "only the other customer is left"
            current = await temporal_client.get_workflow_handle(workflow_id).describe()
            assert current.run_id != runs[workflow_id], "the run holding the customer's signals was closed"
        assert await _owners(temporal_client, unrelated) == [neighbour]
        assert any("address links removed: 4" == line for line in report.lines())
        # Again: nothing left to remove.
        again = await forget_customer(temporal_client, customer_id=customer, task_queue=queue, hasher=ROTATED,
                                      tombstone_unknown=True)
        assert again.address_links == 0


async def _has(client: Client, workflow_id: str, customer: str) -> bool:
    return customer in await _owners(client, workflow_id)
