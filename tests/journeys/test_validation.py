"""Definition and template validation: every error names the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from journeys.loader import SCHEMA_PATH, JourneyDefinitionError, Problem, load_all, validate_folder
from tests.workflows.journey_harness import DEFAULT_TEMPLATES

GOOD = """\
id: demo
version: 1
trigger:
  event: PurchaseCompleted
  filter: "payload.total.amount > 0"
entry:
  rule: once_per_key
  key: payload.order_id
exit:
  - event: OrderRefunded
steps:
  - id: hello
    send:
      channel: email
      template: note
  - id: pause
    delay:
      duration: 1d
  - id: choose
    branch:
      cases:
        - when: "customer.locale == 'de'"
          steps:
            - id: german
              send: {channel: sms, template: note}
      else:
        - id: other
          send: {channel: email, template: note}
"""


def _folder(tmp_path: Path, definition: str, templates: dict[str, object] | None = None,
            raw_templates: dict[str, str] | None = None) -> Path:
    (tmp_path / "definitions").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "definitions" / "demo.yaml").write_text(definition)
    for template_id, body in (templates if templates is not None else DEFAULT_TEMPLATES).items():
        (tmp_path / "templates" / f"{template_id}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    for name, text in (raw_templates or {}).items():
        (tmp_path / "templates" / f"{name}.yaml").write_text(text)
    return tmp_path


def _line(text: str, needle: str, occurrence: int = 1) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def _problems(tmp_path: Path, definition: str, **kwargs: object) -> list[Problem]:
    return list(validate_folder(_folder(tmp_path, definition, **kwargs)).problems)  # type: ignore[arg-type]  # test options passed through untyped


def test_a_good_definition_has_no_problems(tmp_path: Path) -> None:
    report = validate_folder(_folder(tmp_path, GOOD))
    assert report.problems == ()
    (definition,) = report.definitions
    assert definition.trigger_filter == "payload.total.amount > 0"
    assert definition.exit_events[0].key_path == "payload.order_id"  # defaults to the entry key
    assert set(definition.templates) == {"note"}


@pytest.mark.parametrize(("broken", "needle", "message"), [
    (GOOD.replace("    send:\n      channel: email\n      template: note\n  - id: pause",
                  "    sned:\n      channel: email\n      template: note\n  - id: pause"),
     "sned:", "unknown key 'sned'"),
    (GOOD.replace("template: note\n  - id: pause", "template: nope\n  - id: pause"),
     "template: nope", "unknown template 'nope'"),
    (GOOD.replace("when: \"customer.locale == 'de'\"", "when: \"customer.locale = 'de'\""),
     "when: \"customer.locale = 'de'\"", "unexpected"),
    (GOOD.replace("when: \"customer.locale == 'de'\"", "when: \"payload.totl.amount > 3\""),
     "when: \"payload.totl", "has no field 'totl'"),
    (GOOD.replace("event: PurchaseCompleted", "event: PurchaseComplete"),
     "event: PurchaseComplete", "unknown event type 'PurchaseComplete'"),
    (GOOD.replace("filter: \"payload.total.amount > 0\"", "filter: \"__import__('os')\""),
     "filter:", "names may not start with '_'"),
    (GOOD.replace("            - id: german", "            - id: hello"), "            - id: hello",
     "step id 'hello' is used twice"),
    (GOOD.replace("duration: 1d", "duration: 1 day"), "duration: 1 day",
     "steps.1.delay.duration: '1 day' is not a duration: use a number and a unit, e.g. 10m"),
    (GOOD.replace("duration: 1d", "duration: 10"), "duration: 10", "10 is not a duration: use a number and a unit"),
    (GOOD.replace("duration: 1d", "until_local_time: 10:00"), "until_local_time", "quote the time"),
    (GOOD.replace("  - event: OrderRefunded", "  - event: OrderRefunded\n    when: \"payload.amount.amount >>\""),
     "when: \"payload.amount", "expression"),
    (GOOD.replace("when: \"customer.locale == 'de'\"", "when: \"payload.total in customer\""),
     "when: \"payload.total in customer\"", "but payload.total is a record"),
    (GOOD.replace("filter: \"payload.total.amount > 0\"", "filter: \"payload.items > 0\""),
     "filter:", "but payload.items is a list"),
    (GOOD.replace("  - event: OrderRefunded", "  - event: OrderRefunded\n    when: \"payload.order_id in 3\""),
     "when: \"payload.order_id in 3\"", "needs a list, a string or a record on its right"),
    (GOOD.replace("duration: 1d", "duration: 99999999999w"), "duration: 99999999999w", "longer than the maximum"),
    (GOOD.replace("duration: 1d", "duration: 3654d"), "duration: 3654d", "longer than the maximum"),
    (GOOD.replace("    delay:\n      duration: 1d", "    delay:\n      until: occurred_at\n      offset: -99999999999d"),
     "offset: -99999999999d", "delay.offset: duration '99999999999d' is longer than the maximum"),
    (GOOD + "  - id: w\n    wait_for: {event: OrderShipped, timeout: 99999999999h}\n", "timeout: 99999999999h",
     "wait_for.timeout"),
    (GOOD + "  - id: d\n    digest:\n      event: OrderShipped\n      window: 9999999999999999999999s\n"
            "      send: {channel: email, template: digest}\n", "window:", "digest.window"),
    (GOOD.replace("version: 1", "version: &v 1").replace("      duration: 1d", "      duration: *v"), "duration: *v",
     "YAML aliases (*v) are not supported"),
    (GOOD.replace("exit:\n  - event: OrderRefunded", "exit: &loop\n  - *loop"), "- *loop", "YAML aliases"),
    (GOOD.replace("entry:\n", "defaults: &d {rule: once_per_key}\nentry:\n  <<: *d\n"), "<<: *d", "YAML aliases"),
    (GOOD.replace("version: 1", "version: 1\nsince: 2026-13-45"), "since: 2026-13-45", "cannot be read"),
    (GOOD.replace("send: {channel: sms, template: note}", "send: {channel: fax, template: note}"),
     "channel: fax", "'fax' is not one of"),
    (GOOD.replace("key: payload.order_id", "key: payload.order"), "key: payload.order", "has no field 'order'"),
    (GOOD.replace("key: payload.order_id", "key: customer.email"), "key: customer.email",
     "key 'customer.email' is a contact point"),
    (GOOD.replace("key: payload.order_id", "key: customer.phone"), "key: customer.phone",
     "key 'customer.phone' is a contact point"),
    (GOOD.replace("  - event: OrderRefunded", "  - event: OrderRefunded\n    key: customer.whatsapp"),
     "key: customer.whatsapp", "key 'customer.whatsapp' is a contact point"),
    (GOOD + "  - id: w\n    wait_for: {event: OrderShipped, timeout: 1d, key: customer.email}\n", "key: customer.email",
     "key 'customer.email' is a contact point"),
    (GOOD + "  - id: ab\n    split:\n      variants:\n        - {name: A, percent: 60, steps: []}\n"
            "        - {name: B, percent: 60, steps: []}\n", "variants:", "must add up to 100"),
    (GOOD.replace("rule: once_per_key", "rule: every_time"), "rule: every_time", "every_time journeys cannot react"),
    (GOOD.replace("duration: 1d", "until: payload.order_id"), "until: payload.order_id",
     "is not a timestamp in the event"),
    (GOOD.replace("    delay:\n      duration: 1d", "    delay:\n      duration: 1d\n      offset: -1d"),
     "offset: -1d", "offset only goes with until"),
])
def test_problems_name_the_file_and_line(tmp_path: Path, broken: str, needle: str, message: str) -> None:
    assert broken != GOOD
    problems = _problems(tmp_path, broken)

    assert problems, "expected a problem"
    first = problems[0]
    assert first.file.endswith("definitions/demo.yaml")
    assert message in first.message, first
    assert first.line == _line(broken, needle), (str(first), needle)
    assert str(first).startswith(f"{first.file}:{first.line}: ")


def test_a_contact_key_is_rejected_even_on_an_event_type_the_validator_cannot_see(tmp_path: Path) -> None:
    broken = GOOD.replace("event: PurchaseCompleted", "event: SomethingElse").replace("key: payload.order_id",
                                                                                     "key: customer.email")
    messages = [(p.line, p.message) for p in _problems(tmp_path, broken)]
    assert any(line == _line(broken, "key: customer.email") and "'customer.email' is a contact point" in message
               for line, message in messages), messages


def test_every_mistake_of_a_file_is_named_in_one_run(tmp_path: Path) -> None:
    broken = (GOOD.replace("duration: 1d", "duration: 10 minutes")
              .replace("template: note\n  - id: pause", "template: nope\n  - id: pause"))
    problems = _problems(tmp_path, broken)

    assert [(p.line, p.message) for p in problems] == [
        (_line(broken, "duration: 10 minutes"), "steps.1.delay.duration: '10 minutes' is not a duration: use a "
                                                "number and a unit, e.g. 10m (s, m, h, d, w; combined as 1h30m)"),
        (_line(broken, "template: nope"), "unknown template 'nope'")]


def test_a_refused_shape_stops_the_content_checks_without_a_traceback(tmp_path: Path) -> None:
    broken = GOOD.replace("trigger:\n  event: PurchaseCompleted\n  filter: \"payload.total.amount > 0\"\n",
                          "trigger: PurchaseCompleted\n")
    problems = _problems(tmp_path, broken)
    assert [p.message for p in problems] == ["trigger: 'PurchaseCompleted' is not of type 'object'"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    broken = GOOD.replace("      duration: 1d", "      duration: [1d")
    (problem,) = _problems(tmp_path, broken)
    assert "not valid YAML" in problem.message
    assert problem.line is not None and _line(broken, "[1d") <= problem.line <= _line(broken, "[1d") + 2


@pytest.mark.parametrize("text", [
    "a: &x [1, *x]\n",                       # an alias inside its own anchor: a recursive document
    "[" * 100_000,                            # deeper than any stack
    "{a: " * 50_000,
    "id: x\nversion: 1\n  trigger: 2\n",
    "",
    "- just\n- a list\n",
    "id: \"unterminated\n",
])
def test_hostile_yaml_is_a_problem_with_a_line_never_a_traceback(tmp_path: Path, text: str) -> None:
    problems = _problems(tmp_path, text)

    assert problems
    assert all(p.file.endswith("demo.yaml") and p.line >= 1 for p in problems), [str(p) for p in problems]
    with pytest.raises(JourneyDefinitionError, match=r"demo\.yaml:\d+: "):
        load_all(tmp_path)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, GOOD)
    (folder / "definitions" / "demo.yaml").write_bytes(GOOD.encode() + b"# caf\xe9\n")

    (problem,) = validate_folder(folder).problems
    assert problem.line == len(GOOD.splitlines()) + 1 and "not UTF-8" in problem.message


def test_a_recursive_alias_in_a_template_file_names_its_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD, templates={},
                         raw_templates={"note": "id: note\ndefault_locale: en\nchannels: &c\n  email: *c\n"})

    assert any(p.file.endswith("templates/note.yaml") and p.line == 4 and "YAML aliases (*c)" in p.message
               for p in problems), [str(p) for p in problems]


TEMPLATE_WITH_MISSING_VARIABLE = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello"
      body: "Hi {{ customer.first_name }}"
    de:
      subject: "Hallo {{ payload.nope }}"
      body: "Hallo"
  sms:
    en:
      body: "sms"
"""

TEMPLATE_NOT_COMPILING = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello"
      body: |
        Hi {{ customer.first_name }},
        {% for x in payload.total %}
        no end
  sms:
    en:
      body: "sms"
"""

TEMPLATE_UNKNOWN_ROOT = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello {{ order.id }}"
      body: "Hi"
  sms:
    en:
      body: "sms"
"""


TEMPLATE_BOMB = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello"
      body: "{{ 'a' * 10**8 }}"
  sms:
    en:
      body: "sms"
"""


@pytest.mark.parametrize(("template", "needle", "message"), [
    (TEMPLATE_BOMB, "10**8", "does not render with sample data: repetition to 100000000 items"),
    (TEMPLATE_WITH_MISSING_VARIABLE, "payload.nope", "does not render with sample data"),
    (TEMPLATE_NOT_COMPILING, "{% for x in payload.total %}", "does not compile"),
    (TEMPLATE_UNKNOWN_ROOT, "order.id", "unknown variables ['order']"),
])
def test_template_problems_name_the_template_file_and_line(tmp_path: Path, template: str, needle: str,
                                                          message: str) -> None:
    problems = _problems(tmp_path, GOOD, templates={}, raw_templates={"note": template})

    assert problems
    first = problems[0]
    assert first.file.endswith("templates/note.yaml"), str(first)
    assert message in first.message, str(first)
    # Compile errors point into a block scalar; the line is within the template's body.
    assert abs((first.line or 0) - _line(template, needle)) <= 1, (str(first), needle)


def test_template_without_the_sent_channel_is_reported_at_the_send(tmp_path: Path) -> None:
    templates = {"note": {"id": "note", "default_locale": "en",
                          "channels": {"email": {"en": {"subject": "s", "body": "b"}}}}}
    problems = _problems(tmp_path, GOOD, templates=templates)
    assert any("has no sms variant" in p.message and p.line == _line(GOOD, "send: {channel: sms") for p in problems)


def test_load_all_raises_naming_file_and_line(tmp_path: Path) -> None:
    broken = GOOD.replace("template: note\n  - id: pause", "template: nope\n  - id: pause")
    with pytest.raises(JourneyDefinitionError) as caught:
        load_all(_folder(tmp_path, broken))
    assert caught.value.line == _line(broken, "template: nope")
    assert f"demo.yaml:{caught.value.line}:" in str(caught.value)


def test_shipped_journeys_validate_and_match_the_published_schema() -> None:
    report = validate_folder()
    assert report.problems == ()
    assert {d.id for d in report.definitions} >= {"post_purchase", "abandoned_cart", "welcome_series"}
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in sorted((SCHEMA_PATH.parent / "definitions").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    for definition in report.definitions:
        for template in definition.templates.values():
            for channel, locales in template.variants.items():
                assert {"en", "de"} <= set(locales), (template.id, channel)


TEMPLATE_WITH_HTML = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello"
      body: "Hi {{ customer.first_name }}"
      html: |
        <style>p { color: red }</style>
        <p>Hi {{ customer.first_name }} {{ payload.nope }}</p>
  sms:
    en:
      body: "sms"
      html: "<p>sms</p>"
"""


def test_html_parts_are_test_rendered_and_allowed_on_email_only(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD, templates={}, raw_templates={"note": TEMPLATE_WITH_HTML})

    messages = {(p.line, p.message.split(":")[0]) for p in problems}
    assert (_line(TEMPLATE_WITH_HTML, 'html: "<p>sms</p>"'), "sms/en html") in messages, problems
    fixed = TEMPLATE_WITH_HTML.replace('      html: "<p>sms</p>"\n', "")
    (tmp_path / "fixed").mkdir()
    problems = _problems(tmp_path / "fixed", GOOD, templates={}, raw_templates={"note": fixed})
    assert problems and all(p.line == _line(fixed, "html: |") for p in problems), problems
    assert "email/en html (step hello) does not render with sample data" in problems[0].message, problems


PUSH_JOURNEY = GOOD.replace("      channel: email\n      template: note", "      channel: push\n      template: note")
PUSH_TEMPLATE = """\
id: note
default_locale: en
channels:
  email:
    en:
      subject: "Hello"
      body: "Hi"
      title: "not here"
  sms:
    en:
      body: "sms"
  push:
    en:
      body: "Your order {{ payload.order_id }} shipped"
      link: "shop.example.com/orders"
      data:
        order: "{{ payload.nope }}"
        count: 3
"""


def test_push_variants_need_a_title_and_take_a_link_and_string_data_which_are_test_rendered(tmp_path: Path) -> None:
    problems = _problems(tmp_path, PUSH_JOURNEY, templates={}, raw_templates={"note": PUSH_TEMPLATE})
    messages = {(p.line, p.message) for p in problems}
    assert (_line(PUSH_TEMPLATE, 'title: "not here"'),
            "email/en title: only a push or webpush variant has a title") in messages, problems
    assert (_line(PUSH_TEMPLATE, "  push:") + 1, "push/en needs a title (the notification's heading)") in messages
    assert any(p.line == _line(PUSH_TEMPLATE, "link:") and "push/en link" in p.message for p in problems), problems
    assert any(p.line == _line(PUSH_TEMPLATE, "data:") and "push/en data" in p.message for p in problems), problems
    fixed = (PUSH_TEMPLATE.replace('      title: "not here"\n', "").replace("count: 3", 'count: "3"')
             .replace('link: "shop.example.com/orders"', 'link: "https://shop.example.com/orders"')
             .replace('      body: "Your order', '      title: "Shipped"\n      body: "Your order'))
    (tmp_path / "fixed").mkdir()
    problems = _problems(tmp_path / "fixed", PUSH_JOURNEY, templates={}, raw_templates={"note": fixed})
    assert len(problems) == 1 and problems[0].line == _line(fixed, "order: "), problems
    assert "push/en data/order (step hello) does not render with sample data" in problems[0].message, problems
