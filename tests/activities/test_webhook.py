"""The webhook activity keeps event data from steering the request: path, body, port, address, Secrets, save_as."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.webhook import (
    HostList,
    WebhookActivities,
    WebhookCallInput,
    WebhookCallResult,
    WebhookErrorType,
    WebhookSecrets,
    address_problem,
)
from core.settings import WebhookStepSettings

SECRET = "Bearer t0ken-bound-to-the-crm"
#: The README's example of a customer field that climbs out of its path segment.
CLIMBING_ID = "../../admin/users/42/delete?x="


@dataclass
class Receiver:
    """A local HTTP server that records every request's raw path, headers and body."""

    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    base_url: str = ""
    answer: Any = field(default_factory=lambda: {"tier": "gold"})

    @property
    def authority(self) -> str:
        return self.base_url.removeprefix("http://")

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.raw_path, dict(request.headers), await request.read()))
        return web.json_response(self.answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def _activities(tmp_path: Path, receiver: Receiver, **options: Any) -> WebhookActivities:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "crm_token").write_text(SECRET)
    settings: dict[str, Any] = {"secret_hosts": {"crm_token": [receiver.authority]}, "allow_loopback": True,
                                **options}
    allowed = settings.pop("allowed", [receiver.authority])
    return WebhookActivities(allowed, WebhookSecrets(secrets, {}), **settings)


def _call(url: str, context: dict[str, Any] | None = None, **options: Any) -> WebhookCallInput:
    return WebhookCallInput(idempotency_key="wf/s", workflow_id="wf", journey_id="j", step_id="s",
                            method=options.pop("method", "POST"), url_template=url, context=context or {}, **options)


async def _run(activities: WebhookActivities, call: WebhookCallInput) -> WebhookCallResult:
    result: WebhookCallResult = await ActivityEnvironment().run(activities.call_webhook, call)
    return result


async def _refused(activities: WebhookActivities, call: WebhookCallInput) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await _run(activities, call)
    assert raised.value.non_retryable, raised.value
    return raised.value


# --- the URL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "/customers/{{ customer.id }}",
    "/customers/{{ customer.id | urlencode }}",    # the README's own example
    "/customers/{{ customer.id ~ '' }}/orders",
])
async def test_an_interpolated_value_stays_one_path_segment(receiver: Receiver, tmp_path: Path,
                                                           template: str) -> None:
    await _run(_activities(tmp_path, receiver),
               _call(receiver.base_url + template, {"customer": {"id": CLIMBING_ID}}))

    ((raw_path, _, _),) = receiver.requests
    segment = raw_path.removeprefix("/customers/").removesuffix("/orders")
    assert raw_path.startswith("/customers/") and "/" not in segment and "?" not in raw_path
    assert segment == "%2E%2E%2F%2E%2E%2Fadmin%2Fusers%2F42%2Fdelete%3Fx%3D"


@pytest.mark.parametrize("value", ["..", ".", "%2e%2e", "%2E."])
async def test_a_value_that_is_a_dot_segment_is_refused(receiver: Receiver, tmp_path: Path, value: str) -> None:
    call = _call(receiver.base_url + "/customers/{{ customer.id }}/delete", {"customer": {"id": value}})
    # %2e%2e itself is encoded again (to %252e%252e) and reaches the server as a plain segment.
    if "%" in value:
        await _run(_activities(tmp_path, receiver), call)
        assert receiver.requests[0][0] == f"/customers/{value.replace('%', '%25').replace('.', '%2E')}/delete"
        return
    error = await _refused(_activities(tmp_path, receiver), call)
    assert error.type == WebhookErrorType.BAD_URL and receiver.requests == []


# --- the body -----------------------------------------------------------------------------------------

ADDING_A_KEY = 'x", "refund_all": true, "y": "'


async def test_a_body_mapping_is_rendered_leaf_by_leaf_and_serialised_as_json(receiver: Receiver,
                                                                              tmp_path: Path) -> None:
    document = {"order": "{{ payload.order_id }}", "count": 3, "tags": ["{{ customer.id }}", True]}
    context = {"payload": {"order_id": ADDING_A_KEY}, "customer": {"id": 'a"b\\c'}}

    await _run(_activities(tmp_path, receiver), _call(receiver.base_url + "/x", context, body_document=document))

    ((_, headers, body),) = receiver.requests
    assert json.loads(body) == {"order": ADDING_A_KEY, "count": 3, "tags": ['a"b\\c', True]}
    assert headers["Content-Type"] == "application/json"


async def test_a_body_template_string_escapes_values_inside_quotes(receiver: Receiver, tmp_path: Path) -> None:
    call = _call(receiver.base_url + "/x", {"payload": {"order_id": ADDING_A_KEY}},
                 body_template='{"order": "{{ payload.order_id }}"}')

    await _run(_activities(tmp_path, receiver), call)

    assert json.loads(receiver.requests[0][2]) == {"order": ADDING_A_KEY}


@pytest.mark.parametrize("value", ['1, "refund_all": true', '{"refund_all": true}', "[1, 2]", "x"])
async def test_a_body_template_string_a_value_would_reshape_is_refused(receiver: Receiver, tmp_path: Path,
                                                                       value: str) -> None:
    call = _call(receiver.base_url + "/x", {"payload": {"n": value}}, body_template='{"n": {{ payload.n }}}')

    error = await _refused(_activities(tmp_path, receiver), call)

    assert error.type == WebhookErrorType.BAD_BODY and receiver.requests == []


async def test_a_body_template_string_keeps_working_for_ordinary_values(receiver: Receiver, tmp_path: Path) -> None:
    call = _call(receiver.base_url + "/x", {"payload": {"n": 5, "items": ["a", "b"]}},
                 body_template='{"n": {{ payload.n }}, "items": [{% for i in payload["items"] %}"{{ i }}"'
                               '{{ "," if not loop.last }}{% endfor %}]}')

    await _run(_activities(tmp_path, receiver), call)

    assert json.loads(receiver.requests[0][2]) == {"n": 5, "items": ["a", "b"]}


# --- hosts and ports ------------------------------------------------------------------------------


def test_a_host_without_a_port_allows_only_the_scheme_default() -> None:
    hosts = HostList(["crm.example.com", "billing.example.com:8443", "[::1]:8080"])

    assert hosts.allows_url("https://crm.example.com/x") and hosts.allows_url("http://CRM.example.com/x")
    assert hosts.allows_url("https://crm.example.com:443/x")
    assert not hosts.allows_url("https://crm.example.com:8443/x") and not hosts.allows_url("http://crm.example.com:443/")
    assert hosts.allows_url("https://billing.example.com:8443/") and not hosts.allows_url("https://billing.example.com/")
    assert hosts.allows_url("http://[::1]:8080/") and not hosts.allows_url("ftp://crm.example.com/")
    with pytest.raises(ValueError):
        HostList(["crm.example.com/path"])


async def test_a_port_not_listed_with_the_host_is_refused(receiver: Receiver, tmp_path: Path) -> None:
    activities = _activities(tmp_path, receiver, allowed=["127.0.0.1"])  # port 80 only

    error = await _refused(activities, _call(receiver.base_url + "/x"))

    assert error.type == WebhookErrorType.HOST_NOT_ALLOWED and receiver.requests == []


# --- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, allowed", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("10.0.0.7", False), ("172.16.3.4", False), ("192.168.1.1", False), ("169.254.169.254", False),
    ("127.0.0.1", False), ("::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("fe80::1", False), ("fc00::1", False), ("0.0.0.0", False), ("100.64.0.1", False), ("224.0.0.1", False),
])
def test_only_public_addresses_may_be_called(address: str, allowed: bool) -> None:
    assert (address_problem(ipaddress.ip_address(address)) is None) is allowed
    assert address_problem(ipaddress.ip_address("127.0.0.2"), allow_loopback=True) is None
    assert address_problem(ipaddress.ip_address("10.0.0.7"), allow_loopback=True) is not None


async def test_loopback_is_refused_unless_the_test_setting_allows_it(receiver: Receiver, tmp_path: Path) -> None:
    error = await _refused(_activities(tmp_path, receiver, allow_loopback=False), _call(receiver.base_url + "/x"))

    assert error.type == WebhookErrorType.ADDRESS_NOT_ALLOWED and receiver.requests == []
    assert WebhookStepSettings.load({}).allow_loopback is False


@pytest.mark.parametrize("addresses", [["10.0.0.5"], ["93.184.216.34", "169.254.169.254"], ["127.0.0.1", "10.1.1.1"]])
async def test_a_name_with_any_private_address_is_refused(receiver: Receiver, tmp_path: Path,
                                                          addresses: list[str]) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return addresses

    activities = _activities(tmp_path, receiver, allowed=[f"crm.example.com:{receiver.port}"], resolver=resolve)
    error = await _refused(activities, _call(f"http://crm.example.com:{receiver.port}/x"))

    assert error.type == WebhookErrorType.ADDRESS_NOT_ALLOWED and receiver.requests == []


async def test_the_request_goes_to_the_address_checked_not_a_second_lookup(receiver: Receiver,
                                                                          tmp_path: Path) -> None:
    """DNS rebinding: the name answers loopback (allowed here) once, then a private address."""
    answers = [["127.0.0.1"]]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers.pop(0) if answers else ["10.0.0.1"]

    # crm.rebind.invalid resolves nowhere else: the call can only succeed on the address checked.
    authority = f"crm.rebind.invalid:{receiver.port}"
    activities = _activities(tmp_path, receiver, allowed=[authority], resolver=resolve,
                             secret_hosts={"crm_token": [authority]})
    await _run(activities, _call(f"http://{authority}/x", secret_headers={"Authorization": "crm_token"}))

    ((_, headers, _),) = receiver.requests
    assert asked == ["crm.rebind.invalid"]
    assert headers["Host"] == authority and headers["Authorization"] == SECRET


# --- Secrets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret_hosts", [{}, {"crm_token": ["crm.example.com"]}, {"other": ["127.0.0.1"]}])
async def test_a_secret_is_sent_only_to_the_hosts_bound_to_it(receiver: Receiver, tmp_path: Path,
                                                              secret_hosts: dict[str, list[str]]) -> None:
    activities = _activities(tmp_path, receiver, secret_hosts=secret_hosts)

    error = await _refused(activities, _call(receiver.base_url + "/x", secret_headers={"Authorization": "crm_token"}))

    assert error.type == WebhookErrorType.SECRET_NOT_ALLOWED and receiver.requests == []
    assert SECRET not in str(error)


def test_the_secret_hosts_setting_reads_secret_equals_hosts() -> None:
    settings = WebhookStepSettings.load({"EVENTFLOW_WEBHOOK_SECRET_HOSTS": "crm_token=a.example.com b.example.com:8443,"
                                                                           "Other=c.example.com|d.example.com"})
    assert settings.secret_hosts == {"crm_token": ("a.example.com", "b.example.com:8443"),
                                     "other": ("c.example.com", "d.example.com")}
    with pytest.raises(Exception, match="EVENTFLOW_WEBHOOK_SECRET_HOSTS"):
        WebhookStepSettings.load({"EVENTFLOW_WEBHOOK_SECRET_HOSTS": "crm_token"})


# --- save_as ----------------------------------------------------------------------------------------


async def test_a_saved_response_is_capped(receiver: Receiver, tmp_path: Path) -> None:
    activities = _activities(tmp_path, receiver, max_saved_bytes=100)
    receiver.answer = {"tier": "gold", "pad": "p" * 200}

    error = await _refused(activities, _call(receiver.base_url + "/x", expect_json=True))
    not_saved = await _run(activities, _call(receiver.base_url + "/x"))  # no save_as: nothing kept anyway
    receiver.answer = {"tier": "gold"}
    saved = await _run(activities, _call(receiver.base_url + "/x", expect_json=True))

    assert error.type == WebhookErrorType.SAVED_TOO_LARGE and "nothing was saved" in error.message
    assert not_saved.status_code == 200 and not_saved.data is None  # not kept in the history either
    assert saved.data == {"tier": "gold"}
    assert WebhookStepSettings.load({}).max_saved_bytes == 16384
