"""Which customers an address belongs to, so a STOP sent from a phone reaches their preferences.

A Twilio inbound message names only the phone number it came from. ``AddressContacts`` (workflow
id ``address:{channel}:{address_hash}``, one per hashed address) learns the customers it belongs
to from status callbacks (each carries the customer id in its URL), and forwards a STOP / START to
every one of them as a `ContactKeyword` signal on their ``CustomerPreferences``; a customer first
seen after a STOP gets it too. Only the address hash is stored, never the number.

``customers forget`` removes a customer from the addresses they were seen at (`FORGET_OWNER_SIGNAL`);
the workflow then continues as new at once, so the run whose history holds the customer's id closes
and can be deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.ids import join_id
    from workflows.preferences import preferences_workflow_id
    from workflows.suppression import CONTACT_KEYWORD_SIGNAL, ContactKeyword, KeywordAction

ADDRESS_CONTACTS_WORKFLOW = "AddressContacts"
CONTACT_SEEN_SIGNAL = "contact_seen"
KEYWORD_SIGNAL = "keyword"
FORGET_OWNER_SIGNAL = "forget_owner"
OWNERS_QUERY = "owners"
#: Customers remembered per address (the most recent ones).
OWNERS_KEPT = 20
_MAX_CHANGES_PER_RUN = 500


def address_workflow_id(channel: str, address_hash: str) -> str:
    """The workflow id of one hashed address on one channel."""
    return join_id("address", channel, address_hash)


@dataclass(frozen=True)
class ContactSeen:
    """A send to this address for ``customer_id`` was reported by the provider."""

    customer_id: str


@dataclass(frozen=True)
class ForgetOwner:
    """``customer_id`` was forgotten: this address no longer belongs to them."""

    customer_id: str


@dataclass(frozen=True)
class AddressInput:
    """Start input; on continue-as-new it carries the state forward."""

    channel: str
    address_hash: str
    owners: list[str] = field(default_factory=list)
    #: The latest STOP or START, forwarded to customers seen later.
    keyword: ContactKeyword | None = None
    pending: list[str] = field(default_factory=list)


@workflow.defn(name=ADDRESS_CONTACTS_WORKFLOW)
class AddressContacts:
    """One address's customers and its latest keyword; forwards keywords to the customers' preferences."""

    def __init__(self) -> None:
        self._owners: list[str] = []
        self._keyword: ContactKeyword | None = None
        self._pending: list[str] = []
        self._changes = 0
        #: A forget asked for a new run, so the run holding the forgotten id closes.
        self._roll_over = False
        #: Forgotten in this run (a forget may land before `run` reads its start input).
        self._forgotten: set[str] = set()

    @workflow.run
    async def run(self, start: AddressInput) -> None:
        self._owners = [o for o in (*start.owners, *(o for o in self._owners if o not in start.owners))
                        if o not in self._forgotten][-OWNERS_KEPT:]
        self._keyword = self._keyword or start.keyword
        self._pending = [p for p in (*start.pending, *self._pending) if p not in self._forgotten]
        while True:
            await workflow.wait_condition(lambda: bool(self._pending) or self._changes >= _MAX_CHANGES_PER_RUN
                                          or self._roll_over or workflow.info().is_continue_as_new_suggested())
            if not self._pending:
                break
            customer_id = self._pending.pop(0)
            keyword = self._keyword
            if keyword is None or keyword.action is KeywordAction.HELP:
                continue
            try:
                await workflow.get_external_workflow_handle(preferences_workflow_id(customer_id)).signal(
                    CONTACT_KEYWORD_SIGNAL, keyword)
            except Exception as exc:  # noqa: BLE001 - a customer without preferences cannot be stopped; go on
                workflow.logger.warning("keyword not forwarded error=%s", type(exc).__name__)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(AddressInput(start.channel, start.address_hash, list(self._owners),
                                              self._keyword, list(self._pending)))

    @workflow.query(name=OWNERS_QUERY)
    def owners(self) -> list[str]:
        """The customers known at this address (ids only)."""
        return list(self._owners)

    @workflow.signal(name=CONTACT_SEEN_SIGNAL)
    def contact_seen(self, seen: ContactSeen) -> None:
        """Remembers a customer of this address; one first seen after a STOP is stopped too."""
        if seen.customer_id in self._owners:
            return
        self._changes += 1
        self._owners = [*self._owners, seen.customer_id][-OWNERS_KEPT:]
        if self._keyword is not None and self._keyword.action is KeywordAction.OPT_OUT:
            self._pending.append(seen.customer_id)

    @workflow.signal(name=FORGET_OWNER_SIGNAL)
    def forget_owner(self, forgotten: ForgetOwner) -> None:
        """Drops a forgotten customer from the owners and from the keywords still to forward, then rolls over."""
        self._forgotten.add(forgotten.customer_id)
        self._owners = [o for o in self._owners if o != forgotten.customer_id]
        self._pending = [p for p in self._pending if p != forgotten.customer_id]
        self._roll_over = True

    @workflow.signal(name=KEYWORD_SIGNAL)
    def keyword(self, keyword: ContactKeyword) -> None:
        """A STOP / START from this address: forwarded to every known customer (a repeat of the latest is ignored)."""
        if self._keyword is not None and keyword.report_id and keyword.report_id == self._keyword.report_id:
            return
        self._changes += 1
        if keyword.action is KeywordAction.HELP:
            return
        self._keyword = keyword
        self._pending.extend(o for o in self._owners if o not in self._pending)
