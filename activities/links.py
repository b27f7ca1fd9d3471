"""The preference links a message carries: ``{{ preferences_url }}`` and the List-Unsubscribe headers.

Every email that is not of a transactional topic carries (RFC 2369, RFC 8058)::

    List-Unsubscribe: <https://prefs.example.com/u/TOKEN>, <mailto:unsubscribe@example.com?subject=unsubscribe%20TOKEN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

A POST of ``List-Unsubscribe=One-Click`` to that URL (what Gmail and Yahoo send) opts the customer
out of the send's topic on email at once; a send without a topic opts out of email as a whole
(the channel-wide opt-out that governs it). The token is `core.preference_links`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from core.preference_links import PreferenceLinks

#: Where the preference center serves a page link and a one-click unsubscribe link.
PAGE_PATH = "/p/"
UNSUBSCRIBE_PATH = "/u/"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class MessageLinks:
    """Makes the links of one message: signed for its customer, expiring after the configured days.

    Attributes:
        links: the token maker (its keys).
        base_url: the preference center's public URL.
        page_seconds, unsubscribe_seconds: how long each kind of link works.
        mailto: the List-Unsubscribe mailto address (``""``: the https URL only).
    """

    links: PreferenceLinks
    base_url: str
    page_seconds: float
    unsubscribe_seconds: float
    mailto: str = ""

    def page_url(self, customer_id: str, now: float) -> str:
        token = self.links.page(customer_id, now + self.page_seconds)
        return f"{self.base_url.rstrip('/')}{PAGE_PATH}{token}"

    def unsubscribe_url(self, customer_id: str, channel: str, topic: str, now: float) -> str:
        token = self.links.unsubscribe(customer_id, channel, topic, now + self.unsubscribe_seconds)
        return f"{self.base_url.rstrip('/')}{UNSUBSCRIBE_PATH}{token}"

    def list_unsubscribe(self, customer_id: str, channel: str, topic: str, now: float) -> dict[str, str]:
        """The two headers of one email (RFC 8058: the https URL first, then the mailto)."""
        url = self.unsubscribe_url(customer_id, channel, topic, now)
        targets = [f"<{url}>"]
        if self.mailto:
            token = url.rsplit("/", 1)[1]
            targets.append(f"<mailto:{self.mailto}?subject={quote('unsubscribe ' + token)}>")
        return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}
