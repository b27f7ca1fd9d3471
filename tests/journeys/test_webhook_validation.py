"""Validation of ``webhook`` steps: file:line errors, the allow-list for literal hosts, saved responses in templates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eventflow.cli import main
from journeys.loader import validate_folder
from journeys.steps import SecretHeader, WebhookMethod, WebhookStep
from journeys.webhook_check import literal_host
from tests.workflows.journey_harness import DEFAULT_TEMPLATES

TIER = {"id": "tier", "default_locale": "en", "channels": {"sms": {"en": {"body": "Tier {{ webhooks.crm.tier }}"}}}}


def _definition(url: str, *, extra: str = "", save_as: str = "crm", template: str = "tier") -> str:
    return f"""\
id: demo
version: 1
trigger: {{event: PurchaseCompleted}}
entry: {{rule: every_time}}
steps:
  - id: enrich
    webhook:
      method: GET
      url: "{url}"
      headers: [{{name: Authorization, secret: crm_token}}]
      save_as: {save_as}
      timeout: 5s{extra}
  - id: vip
    branch:
      cases:
        - when: "webhooks.crm.tier == 'gold'"
          steps:
            - id: tell
              send: {{channel: sms, template: {template}}}
"""


def _folder(tmp_path: Path, definition: str) -> Path:
    (tmp_path / "definitions").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "definitions" / "demo.yaml").write_text(definition)
    for template_id, body in {**DEFAULT_TEMPLATES, "tier": TIER}.items():
        (tmp_path / "templates" / f"{template_id}.yaml").write_text(yaml.safe_dump(body))
    return tmp_path


def _line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_an_allowed_webhook_loads_typed_and_its_response_test_renders(tmp_path: Path) -> None:
    report = validate_folder(_folder(tmp_path, _definition("https://crm.example.com/c/{{ customer.id }}")),
                             allowed_hosts=("crm.example.com",))

    assert report.problems == ()
    (definition,) = report.definitions
    step = definition.steps[0]
    assert step == WebhookStep("enrich", url="https://crm.example.com/c/{{ customer.id }}", method=WebhookMethod.GET,
                               headers=(SecretHeader("Authorization", "crm_token"),), timeout="5s", save_as="crm")
    assert "crm_token" in str(definition.snapshot()["steps"][0])


def test_a_literal_host_outside_the_allow_list_is_a_file_line_error(tmp_path: Path) -> None:
    text = _definition("https://evil.example.net/c")
    (problem,) = validate_folder(_folder(tmp_path, text), allowed_hosts=("crm.example.com",)).problems

    assert problem.line == _line_of(text, "url:") and problem.file.endswith("demo.yaml")
    assert "'evil.example.net' is not in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS (crm.example.com)" in problem.message
    # Processes load journeys without judging hosts: the worker refuses the call instead.
    assert validate_folder(tmp_path).problems == ()


def test_a_templated_host_is_left_to_the_worker(tmp_path: Path) -> None:
    assert literal_host("https://{{ payload.host }}/x") is None and literal_host("http://a.example.com:81/") == \
        "a.example.com"
    text = _definition("https://{{ customer.id }}.example.com/x")
    assert validate_folder(_folder(tmp_path, text), allowed_hosts=()).problems == ()


@pytest.mark.parametrize("url, extra, needle, message", [
    ("ftp://crm.example.com/x", "", "url:", "must be an http or https URL"),
    ("https://crm.example.com/{{ customer.id", "", "url:", "webhook.url does not compile"),
    ("https://crm.example.com/x", "\n      retry: {max_attempts: 3, initial_interval: 99999d}", "retry:",
     "webhook.retry.initial_interval"),
    ("https://crm.example.com/x", "\n      colour: red", "colour:", "unknown key 'colour'"),
])
def test_webhook_mistakes_name_their_line(tmp_path: Path, url: str, extra: str, needle: str, message: str) -> None:
    text = _definition(url, extra=extra)
    problems = validate_folder(_folder(tmp_path, text), allowed_hosts=("crm.example.com",)).problems

    assert any(message in p.message and p.line == _line_of(text, needle) for p in problems), \
        [str(p) for p in problems]


def test_a_template_typo_next_to_a_response_still_fails(tmp_path: Path) -> None:
    TIER_TYPO = {**TIER, "id": "tier_typo", "channels": {"sms": {"en": {
        "body": "{{ webhooks.crm.tier }} {{ payload.ordr_id.x }}"}}}}
    folder = _folder(tmp_path, _definition("https://crm.example.com/x", template="tier_typo"))
    (folder / "templates" / "tier_typo.yaml").write_text(yaml.safe_dump(TIER_TYPO))

    problems = validate_folder(folder).problems
    assert any("tier_typo" in p.message and "does not render" in p.message for p in problems), \
        [str(p) for p in problems]


def test_validate_command_reads_the_allow_list_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, _definition("https://crm.example.com/x"))
    monkeypatch.setenv("EVENTFLOW_WEBHOOK_ALLOWED_HOSTS", "other.example.com")
    assert main(["journeys", "validate", "--dir", str(folder)]) == 1
    assert "'crm.example.com' is not in EVENTFLOW_WEBHOOK_ALLOWED_HOSTS" in capsys.readouterr().err

    monkeypatch.setenv("EVENTFLOW_WEBHOOK_ALLOWED_HOSTS", "crm.example.com, other.example.com")
    assert main(["journeys", "validate", "--dir", str(folder)]) == 0


async def test_simulation_records_a_webhook_without_calling_it(tmp_path: Path) -> None:
    from eventflow.commands.simulate import simulate_run
    from journeys.diagram import build
    from journeys.diagram_text import render_text
    from tests.workflows.journey_harness import purchase

    (definition,) = validate_folder(_folder(tmp_path, _definition("https://crm.example.com/x"))).definitions
    run = await simulate_run(definition, [purchase()])

    (line,) = [e for e in run.timeline if e.step == "enrich" and "not called" in e.what]
    assert line.what == "webhook GET https://crm.example.com/x (not called)"
    assert run.path == ("enrich", "vip") and run.finished  # no response saved, so the branch's case is false
    text = render_text(build(definition).with_path(run.path, finished=run.finished))
    assert any(row.startswith("* ") and "[enrich] webhook GET crm.example.com/x" in row for row in text.splitlines())


def test_a_body_mapping_loads_as_data_and_each_template_leaf_is_checked(tmp_path: Path) -> None:
    body = '\n      body:\n        order: "{{ payload.order_id }}"\n        count: 3\n        tags: ["{{ customer.id"]'
    text = _definition("https://crm.example.com/x", extra=body)
    (problem,) = validate_folder(_folder(tmp_path, text), allowed_hosts=("crm.example.com",)).problems

    assert "webhook.body.tags.0 does not compile" in problem.message

    fine = _definition("https://crm.example.com/x", extra=body.replace('"{{ customer.id"', '"{{ customer.id }}"'))
    report = validate_folder(_folder(tmp_path, fine), allowed_hosts=("crm.example.com",))
    assert report.problems == ()
    step = report.definitions[0].steps[0]
    assert isinstance(step, WebhookStep)
    assert step.body == {"order": "{{ payload.order_id }}", "count": 3, "tags": ["{{ customer.id }}"]}


@pytest.mark.parametrize("url, allowed, ok", [
    ("https://crm.example.com:8443/x", ("crm.example.com",), False),
    ("https://crm.example.com:8443/x", ("crm.example.com:8443",), True),
    ("http://crm.example.com/x", ("crm.example.com",), True),
    ("https://crm.example.com/x", ("crm.example.com:8443",), False),
])
def test_a_literal_port_must_be_allowed_with_its_host(tmp_path: Path, url: str, allowed: tuple[str, ...],
                                                      ok: bool) -> None:
    problems = validate_folder(_folder(tmp_path, _definition(url)), allowed_hosts=allowed).problems

    assert (problems == ()) is ok, [str(p) for p in problems]
