"""The preference center's HTTP application: pages, one-click unsubscribe and the JSON API.

Routes:

* ``GET /p/{token}``: the preference page of the customer a ``page`` token names: channels and
  topics as checkboxes, in the customer's language; the form carries a single-use ``form`` token.
* ``POST /p``: that form; the choices are written (only those that differ; audited with the
  source ``preference_center``) and a confirmation is shown. A form is accepted once.
* ``GET /u/{token}``: a one-button page confirming an unsubscribe (a GET changes nothing: mail
  scanners open links); ``POST /u/{token}``: unsubscribes at once (RFC 8058: the body
  ``List-Unsubscribe=One-Click``, from the mailbox provider, gets a plain answer; the button a page).
* ``GET|PUT /api/v1/customers/{customer_id}/preferences``: the JSON API for your own apps, with
  ``Authorization: Bearer <EVENTFLOW_PREFERENCES_API_TOKEN>`` (404 while no token is configured).
* ``GET /healthz``.

A token is checked wholly before anything is looked up, and every refusal reads the same whether
or not the customer exists (core/preference_links.py). Responses are never cached, send no
referrer (the token is in the URL) and load nothing from elsewhere.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy
from prometheus_client import CollectorRegistry, Counter

from activities.links import ONE_CLICK, PAGE_PATH, UNSUBSCRIBE_PATH
from activities.topics import Topic, TopicCatalog
from core.preference_links import LinkClaims, LinkPurpose, PreferenceLinks, TokenProblem, TokenRefused
from core.vocabulary import CHANNELS
from eventflow.preferences.pages import Choice, TopicView, message_page, preference_page, texts
from eventflow.preferences.texts import Language, from_accept_language, language_of
from store.consent import CHANNEL_WIDE, ConsentChange, ConsentStore, subscribed

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Longest customer id the API accepts in its path.
_MAX_CUSTOMER_ID = 200
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


class ConsentSource:
    """Where a change came from, as the audit trail records it."""

    PAGE = "preference_center"
    ONE_CLICK = "one_click_unsubscribe"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"
    API = "preferences_api"


class PreferenceMetrics:
    """The preference center's counters (bounded labels only)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter("eventflow_preferences_links_refused", "Preference links refused, by reason: "
                               "malformed, unknown_key, bad_signature, wrong_purpose, expired, replayed.",
                               ["problem"], registry=registry)
        self.changes = Counter("eventflow_preferences_consent_changes", "Consent changes written, by source.",
                               ["source"], registry=registry)


class PreferenceCenter:
    """The aiohttp application; `start` binds it, `stop` closes it.

    Args:
        links: checks tokens and makes the page's form and back links.
        consent: the customer store's consent.
        topics: the declared topics (the page offers every one; transactional ones without a box).
        public_url: the center's external base URL (form actions); ``""``: relative paths.
        api_token: the JSON API's bearer token; None switches the API off.
        form_seconds: how long an opened page's form may be submitted.
        clock: epoch seconds now (tests move it).
    """

    def __init__(self, *, links: PreferenceLinks, consent: ConsentStore, topics: TopicCatalog, public_url: str = "",
                 api_token: str | None = None, form_seconds: float = 3600.0, max_body_bytes: int = 65536,
                 metrics: PreferenceMetrics | None = None, clock: Callable[[], float] = time.time,
                 host: str = "0.0.0.0", port: int = 0) -> None:
        self._links = links
        self._consent = consent
        self._topics = topics
        self._base = public_url.rstrip("/")
        self._api_token = api_token.encode() if api_token else None
        self._form_seconds = form_seconds
        self._metrics = metrics or PreferenceMetrics(CollectorRegistry())
        self._clock = clock
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        offered = [channel for channel in CHANNELS if any(channel in topic.channels for topic in topics)]
        self._channels = tuple(offered or CHANNELS)
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._headers])
        self.app.router.add_get(PAGE_PATH + "{token}", self._page)
        self.app.router.add_post(PAGE_PATH.rstrip("/"), self._submit)
        self.app.router.add_get(UNSUBSCRIBE_PATH + "{token}", self._unsubscribe_page)
        self.app.router.add_post(UNSUBSCRIBE_PATH + "{token}", self._unsubscribe)
        self.app.router.add_get("/api/v1/customers/{customer_id}/preferences", self._api_get)
        self.app.router.add_put("/api/v1/customers/{customer_id}/preferences", self._api_put)
        self.app.router.add_get("/healthz", self._healthz)

    @property
    def port(self) -> int:
        assert self._runner is not None and self._runner.addresses, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)  # URLs carry tokens: no access log
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("preferences_started", port=self.port, topics=len(self._topics))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    # -- pages ---------------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        try:
            claims = self._verify(request.match_info["token"], LinkPurpose.PAGE)
        except TokenRefused as refused:
            return self._refusal_page(request, refused.problem)
        return await self._render_page(request, claims.customer_id)

    async def _render_page(self, request: web.Request, customer_id: str) -> web.StreamResponse:
        language = await self._language(request, customer_id)
        states = await self._consent.states(customer_id)
        channel_names = texts(language)
        channels = [Choice(channel, channel_names[channel], subscribed(states, channel, CHANNEL_WIDE, self._topics))
                    for channel in self._channels]
        topics = [TopicView(topic.name, topic.title_in(language), topic.description_in(language), topic.transactional,
                            [Choice(channel, channel_names[channel], subscribed(states, channel, topic.name,
                                                                                self._topics))
                             for channel in topic.channels])
                  for topic in self._topics]
        form = self._links.form(customer_id, self._clock() + self._form_seconds)
        return _html(preference_page(language, action=f"{self._base}{PAGE_PATH.rstrip('/')}", form_token=form,
                                     channels=channels, topics=topics))

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        data = await request.post()
        try:
            claims = self._verify(str(data.get("form", "")), LinkPurpose.FORM)
        except TokenRefused as refused:
            return self._refusal_page(request, refused.problem)
        changes = self._form_changes(data)
        written = await self._consent.apply(claims.customer_id, changes, self._topics, source=ConsentSource.PAGE,
                                            form=(claims.nonce, datetime.fromtimestamp(claims.expires_at, UTC)))
        if written is None:
            return self._refusal_page(request, TokenProblem.REPLAYED)
        self._metrics.changes.labels(ConsentSource.PAGE).inc(len(written))
        log.info("preferences_saved", changes=len(written))
        language = await self._language(request, claims.customer_id)
        t = texts(language)
        back = f"{self._base}{PAGE_PATH}{self._links.page(claims.customer_id, self._clock() + self._form_seconds)}"
        return _html(message_page(language, title=t["saved_title"], message=t["saved"] if written else t["unchanged"],
                                  link=back))

    def _form_changes(self, data: MultiDictProxy[Any]) -> list[ConsentChange]:
        """Every offered box as a wanted state: a box left unticked is not sent, so it means unsubscribed."""
        changes = [ConsentChange(channel, CHANNEL_WIDE, f"channel.{channel}" in data) for channel in self._channels]
        changes += [ConsentChange(channel, topic.name, f"topic.{topic.name}.{channel}" in data)
                    for topic in self._topics.unsubscribable() for channel in topic.channels]
        return changes

    async def _unsubscribe_page(self, request: web.Request) -> web.StreamResponse:
        try:
            claims = self._verify(request.match_info["token"], LinkPurpose.UNSUBSCRIBE)
        except TokenRefused as refused:
            return self._refusal_page(request, refused.problem)
        language = await self._language(request, claims.customer_id)
        t = texts(language)
        return _html(message_page(language, title=t["unsubscribe_title"],
                                  message=t["unsubscribe_confirm"].format(**self._what(claims, language)),
                                  form_action=f"{self._base}{UNSUBSCRIBE_PATH}{request.match_info['token']}",
                                  button=t["unsubscribe_button"]))

    async def _unsubscribe(self, request: web.Request) -> web.StreamResponse:
        data = await request.post()
        one_click = data.get("List-Unsubscribe") == ONE_CLICK.partition("=")[2]
        try:
            claims = self._verify(request.match_info["token"], LinkPurpose.UNSUBSCRIBE)
        except TokenRefused as refused:
            if one_click:
                return web.Response(status=_status(refused.problem), text="this unsubscribe link is not valid\n")
            return self._refusal_page(request, refused.problem)
        source = ConsentSource.ONE_CLICK if one_click else ConsentSource.UNSUBSCRIBE_PAGE
        written = await self._consent.apply(claims.customer_id, [ConsentChange(claims.channel, claims.topic, False)],
                                            self._topics, source=source) or []
        self._metrics.changes.labels(source).inc(len(written))
        log.info("unsubscribed", source=source, channel=claims.channel, topic=claims.topic, changed=bool(written))
        if one_click:
            return web.Response(text="unsubscribed\n")
        language = await self._language(request, claims.customer_id)
        t = texts(language)
        back = f"{self._base}{PAGE_PATH}{self._links.page(claims.customer_id, self._clock() + self._form_seconds)}"
        return _html(message_page(language, title=t["unsubscribed_title"],
                                  message=t["unsubscribed"].format(**self._what(claims, language)), link=back))

    def _what(self, claims: LinkClaims, language: Language) -> dict[str, str]:
        t = texts(language)
        topic = self._topics.get(claims.topic)
        return {"topic": topic.title_in(language) if topic is not None else t["all_messages"],
                "channel": t.get(claims.channel, claims.channel)}

    def _verify(self, token: str, purpose: LinkPurpose) -> LinkClaims:
        try:
            return self._links.verify(token, purpose, self._clock())
        except TokenRefused as refused:
            self._metrics.refused.labels(refused.problem.value).inc()
            log.info("preference_link_refused", problem=refused.problem.value, purpose=purpose.value)
            raise

    def _refusal_page(self, request: web.Request, problem: TokenProblem) -> web.Response:
        """The same page for every customer, known or not: only the kind of problem shows."""
        if problem is TokenProblem.REPLAYED:
            self._metrics.refused.labels(problem.value).inc()
        language = from_accept_language(request.headers.get("Accept-Language", "")) or Language.EN
        t = texts(language)
        key = {TokenProblem.EXPIRED: "expired", TokenProblem.REPLAYED: "replayed"}.get(problem, "invalid")
        return _html(message_page(language, title=t["error_title"], message=t[key], alert=True),
                     status=_status(problem))

    async def _language(self, request: web.Request, customer_id: str) -> Language:
        return (language_of(await self._consent.locale(customer_id))
                or from_accept_language(request.headers.get("Accept-Language", "")) or Language.EN)

    # -- JSON API ------------------------------------------------------------------------------------

    def _api_refusal(self, request: web.Request) -> web.Response | None:
        if self._api_token is None:
            return _json({"error": "not found"}, 404)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _json({"error": "a bearer token is required"}, 401,
                         {"WWW-Authenticate": 'Bearer realm="eventflow-preferences"'})
        if not hmac.compare_digest(token.strip().encode(), self._api_token):
            return _json({"error": "wrong bearer token"}, 403)
        customer_id = request.match_info["customer_id"]
        if not customer_id or len(customer_id) > _MAX_CUSTOMER_ID:
            return _json({"error": f"a customer id is 1-{_MAX_CUSTOMER_ID} characters"}, 400)
        return None

    async def _api_get(self, request: web.Request) -> web.StreamResponse:
        refusal = self._api_refusal(request)
        if refusal is not None:
            return refusal
        return _json(await self._api_view(request.match_info["customer_id"]))

    async def _api_put(self, request: web.Request) -> web.StreamResponse:
        refusal = self._api_refusal(request)
        if refusal is not None:
            return refusal
        customer_id = request.match_info["customer_id"]
        try:
            changes = self._api_changes(await request.json())
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        written = await self._consent.apply(customer_id, changes, self._topics, source=ConsentSource.API) or []
        self._metrics.changes.labels(ConsentSource.API).inc(len(written))
        return _json({**await self._api_view(customer_id), "changed": len(written)})

    async def _api_view(self, customer_id: str) -> dict[str, Any]:
        states = await self._consent.states(customer_id)
        return {
            "customer_id": customer_id,
            "channels": {c: subscribed(states, c, CHANNEL_WIDE, self._topics) for c in self._channels},
            "topics": {topic.name: {"transactional": topic.transactional,
                                    "channels": {c: subscribed(states, c, topic.name, self._topics)
                                                 for c in topic.channels}}
                       for topic in self._topics},
        }

    def _api_changes(self, body: Any) -> list[ConsentChange]:
        """``{"channels": {"email": false}, "topics": {"product_news": {"email": true}}}``: only what is named."""
        if not isinstance(body, Mapping) or set(body) - {"channels", "topics"}:
            raise ValueError('the body is {"channels": {channel: bool}, "topics": {topic: {channel: bool}}}')
        changes = [ConsentChange(channel, CHANNEL_WIDE, _flag(value, f"channels.{channel}"))
                   for channel, value in _mapping(body.get("channels", {}), "channels").items()
                   if _offered(channel, self._channels, "channel")]
        for name, channels in _mapping(body.get("topics", {}), "topics").items():
            topic = self._known_topic(name)
            for channel, value in _mapping(channels, f"topics.{name}").items():
                _offered(channel, topic.channels, f"channel of topic {name!r}")
                changes.append(ConsentChange(channel, topic.name, _flag(value, f"topics.{name}.{channel}")))
        return changes

    def _known_topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise ValueError(f"unknown topic {name!r}")
        if topic.transactional:
            raise ValueError(f"topic {name!r} is transactional: it cannot be unsubscribed")
        return topic


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false")
    return value


def _offered(channel: str, offered: tuple[str, ...], what: str) -> bool:
    if channel not in offered:
        raise ValueError(f"unknown {what} {channel!r} (offered: {', '.join(offered)})")
    return True


def _status(problem: TokenProblem) -> int:
    return {TokenProblem.EXPIRED: 410, TokenProblem.REPLAYED: 409}.get(problem, 400)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _json(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)
