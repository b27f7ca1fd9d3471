"""Journey diagrams: the graph model, its text, Mermaid and SVG renderers, the README region, ``journeys show``."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activities.outcomes import DeliveryOutcome
from devstack.mermaid import installed_mermaid_cli
from eventflow.cli import main
from events import samples
from journeys import load_all
from journeys.diagram import END, TRIGGER, Diagram, build
from journeys.diagram_mermaid import escape, node_id, render_mermaid
from journeys.diagram_svg import SVG_NAMESPACE, layers, render_svg
from journeys.diagram_text import render_text
from journeys.goals import Goal
from journeys.loader import default_journeys_dir
from journeys.mermaid_check import MermaidSyntaxError, check_mermaid
from journeys.model import JourneyDefinition, Listener
from journeys.show import FRONT_README_JOURNEY, readme_with_diagrams
from journeys.steps import (
    BranchCase,
    BranchStep,
    DelayStep,
    DigestStep,
    ExitStep,
    OnWebhookFailure,
    SecretHeader,
    SendOptions,
    SendStep,
    SplitStep,
    SplitVariant,
    Step,
    WaitForStep,
    WebhookStep,
    arms,
    walk,
)

SAMPLES = {d.id: d for d in load_all()}
TRICKY = 'payload.note == "<b>&\'#1\'</b>" or payload.x in [\'a|b\', "end"]'

#: Every step kind, nested, with text that must be escaped everywhere.
EVERY_KIND = JourneyDefinition(
    id="every_kind", version=3, trigger_event="PurchaseCompleted", trigger_filter=TRICKY,
    exit_events=(Listener("OrderRefunded"),),
    steps=(
        WebhookStep("enrich", url="https://crm.example.com/customers/{{ customer.id }}", save_as="crm",
                    headers=(SecretHeader("Authorization", "crm_token"),), on_failure=OnWebhookFailure.EXIT),
        DelayStep("end", duration="1h"),  # a Mermaid keyword as a step id
        BranchStep("vip", cases=(BranchCase(TRICKY, (SendStep("o_vip", SendOptions("sms", "hello")),)),),
                   otherwise=()),
        WaitForStep("x_shipped", event="OrderShipped", timeout="2d", when="payload.carrier == 'dhl'",
                    received=(ExitStep("bye", reason="shipped <fast>"),), timed_out=()),
        SplitStep("ab", variants=(SplitVariant("A", 40, (SendStep("a_send", SendOptions("email", "hello",
                                                                                          fallback="sms")),)),
                                  SplitVariant("B", 60))),
        DigestStep("summary", event="OrderShipped", window="1d", send=SendOptions("email", "digest")),
        WaitForStep("opened", send="a_send", outcome=DeliveryOutcome.OPENED, timeout="3d",
                    timed_out=(SendStep("nudge", SendOptions("sms", "hello")),)),
    ),
    goal=Goal("PurchaseCompleted", "7d", after="a_send"), holdout_percent=10,
)
ALL = {**SAMPLES, EVERY_KIND.id: EVERY_KIND}


def _step_ids(definition: JourneyDefinition) -> set[str]:
    return {step.id for step, _ in walk(definition.steps)}


@pytest.mark.parametrize("journey_id", sorted(ALL))
def test_every_mermaid_diagram_passes_the_checker_with_a_node_per_step(journey_id: str) -> None:
    definition = ALL[journey_id]
    chart = check_mermaid(render_mermaid(build(definition)))

    assert set(chart.nodes) == {node_id(s) for s in _step_ids(definition)} | {"j_trigger", "j_end"}
    assert ("j_trigger", node_id(definition.steps[0].id), "") in chart.edges


@pytest.mark.parametrize("journey_id", sorted(ALL))
def test_every_svg_is_svg_1_1_and_names_every_step(journey_id: str) -> None:
    definition = ALL[journey_id]
    root = ET.fromstring(render_svg(build(definition)))

    assert root.tag == f"{{{SVG_NAMESPACE}}}svg" and root.get("version") == "1.1"
    titles = {t.text for t in root.iter(f"{{{SVG_NAMESPACE}}}title")}
    group_ids = {g.get("id") for g in root.iter(f"{{{SVG_NAMESPACE}}}g")}
    for step_id in _step_ids(definition):
        assert step_id in titles and f"step-{step_id}" in group_ids


def test_escaped_text_survives_every_format() -> None:
    diagram = build(EVERY_KIND)
    root = ET.fromstring(render_svg(diagram))
    texts = [t.text or "" for t in root.iter(f"{{{SVG_NAMESPACE}}}text")]
    chart = check_mermaid(render_mermaid(diagram))

    assert any("shipped <fast>" in t for t in texts)  # XML-escaped on the way in, read back whole
    assert '"' not in chart.nodes["j_trigger"] and "#quot;" in chart.nodes["j_trigger"]
    assert "end" not in chart.nodes and "s_end" in chart.nodes
    assert f"when {TRICKY}" in render_text(diagram)


def test_the_graph_says_what_each_step_does_and_where_it_goes() -> None:
    diagram = build(EVERY_KIND)
    lines = {n.id: n.lines for n in diagram.nodes}
    targets = {(e.source, e.label): e.target for e in diagram.edges}

    assert lines["enrich"][1:] == ("webhook POST crm.example.com/customers/{{ customer.id }}", "save as webhooks.crm",
                                   "on failure: exit")
    assert lines["end"][1:] == ("delay 1h",) and lines["summary"][1:] == ("digest OrderShipped over 1d",
                                                                          "send email · template digest")
    assert lines["x_shipped"][1:] == ("wait for OrderShipped up to 2d", "when payload.carrier == 'dhl'")
    assert lines["a_send"][1:] == ("send email · template hello · fallback sms",)
    assert targets[("vip", f"when {TRICKY}")] == "o_vip" and targets[("vip", "else")] == "x_shipped"
    assert targets[("o_vip", "")] == "x_shipped"  # an arm's end goes on after its owner
    assert targets[("x_shipped", "received")] == "bye" and targets[("x_shipped", "timed out after 2d")] == "ab"
    assert targets[("ab", "A 40%")] == "a_send" and targets[("ab", "B 60%")] == "summary"
    assert targets[("summary", "")] == "opened" and not diagram.outgoing("bye")  # an exit step ends there
    assert lines["opened"][1:] == ("wait for opened of a_send up to 3d",)
    assert targets[("opened", "opened")] == END and targets[("opened", "not opened after 3d")] == "nudge"
    assert lines[TRIGGER] == ("trigger PurchaseCompleted", f"filter {TRICKY}", "exits on OrderRefunded",
                              "goal PurchaseCompleted within 7d after a_send", "holdout 10%")


def test_layers_put_every_edge_downwards() -> None:
    for definition in ALL.values():
        diagram = build(definition)
        layer = layers(diagram)
        assert all(layer[e.target] > layer[e.source] for e in diagram.edges), definition.id


def _welcome_run() -> Diagram:
    path = ["welcome", "until_day_two", "getting_started", "until_day_six", "offer_or_feedback", "welcome_feedback"]
    return build(SAMPLES["welcome_series"]).with_path(path, finished=True)


def test_a_run_is_highlighted_in_mermaid_svg_and_text() -> None:
    diagram = _welcome_run()
    chart = check_mermaid(render_mermaid(diagram))
    taken = chart.classes["taken"]
    link_style = next(line for line in render_mermaid(diagram).splitlines() if "linkStyle" in line)
    indexes = {int(i) for i in link_style.split()[1].split(",")}

    assert "s_welcome_feedback" in taken and "j_end" in taken and "s_welcome_offer" not in taken
    assert {chart.edges[i][:2] for i in indexes} >= {("s_offer_or_feedback", "s_welcome_feedback"),
                                                      ("s_welcome_feedback", "j_end")}
    assert ("s_offer_or_feedback", "s_welcome_offer") not in {chart.edges[i][:2] for i in indexes}
    root = ET.fromstring(render_svg(diagram))
    taken_groups = {g.get("id") for g in root.iter(f"{{{SVG_NAMESPACE}}}g") if "taken" in (g.get("class") or "")}
    assert "step-welcome_feedback" in taken_groups and "step-welcome_offer" not in taken_groups
    text = render_text(diagram).splitlines()
    assert any(line.startswith("* ") and "[welcome_feedback]" in line for line in text)
    assert any(line.startswith("  ") and "[welcome_offer]" in line for line in text)
    assert any(line.startswith("* ") and "else -> welcome_feedback" in line for line in text)


def test_text_lists_steps_in_reading_order_indented_by_nesting() -> None:
    lines = render_text(build(SAMPLES["welcome_series"])).splitlines()
    order = [line.strip().split("]")[0].lstrip("[") for line in lines if line.strip().startswith("[")]

    assert lines[0] == "journey welcome_series v1" and "trigger UserSignedUp" in lines[1]
    assert order == [s.id for s, _ in walk(SAMPLES["welcome_series"].steps)]
    offer = next(line for line in lines if "[welcome_offer]" in line)
    top = next(line for line in lines if "[welcome]" in line)
    assert len(offer) - len(offer.lstrip()) > len(top) - len(top.lstrip())


@pytest.mark.parametrize("source, problem", [
    ("", "empty"),
    ("graph TD\n  a[\"x\"]", "expected 'flowchart"),
    ("flowchart XY\n  a[\"x\"]", "expected 'flowchart"),
    ("flowchart TD\n  a[\"x\"\n", "not a node"),
    ("flowchart TD\n  a[\"x\"]\n  a[\"y\"]", "defined twice"),
    ("flowchart TD\n  a[\"x\"]\n  a --> b", "undefined node 'b'"),
    ("flowchart TD\n  end[\"x\"]", "keyword"),
    ("flowchart TD\n  a[\"say \"hi\"\"]", "not a node"),
    ("flowchart TD\n  a[\"1 # 2\"]", "raw '#'"),
    ("flowchart TD\n  a[\"<b>x</b>\"]", "raw '<'"),
    ("flowchart TD\n  a(\"x\"]", "not a node"),
    ("flowchart TD\n  a[\"x\"]\n  a -->|x| a", "not a node"),
    ("flowchart TD\n  a[\"x\"]\n  class a taken", "no classDef"),
    ("flowchart TD\n  a[\"x\"]\n  linkStyle 0 stroke:#f00", "0 edges"),
    ("flowchart TD\n  a[\"x\"]\n  a ==> a", "not a node"),
])
def test_the_checker_rejects_malformed_mermaid(source: str, problem: str) -> None:
    with pytest.raises(MermaidSyntaxError, match=problem):
        check_mermaid(source)


@given(st.text(max_size=80))
def test_any_label_text_escapes_into_a_valid_label(text: str) -> None:
    chart = check_mermaid(f'flowchart TD\n    n["{escape(text)}"]\n    n -->|"{escape(text)}"| n\n')
    assert set(chart.nodes) == {"n"}


def test_the_readme_diagrams_match_the_definitions() -> None:
    readme = default_journeys_dir() / "README.md"
    text = readme.read_text()

    assert readme_with_diagrams(text, list(SAMPLES.values())) == text, \
        "journeys/README.md is stale: run `eventflow journeys show --update-readme`"
    for journey_id, definition in SAMPLES.items():
        assert render_mermaid(build(definition)) in text, journey_id


def test_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="region"):
        readme_with_diagrams("# no markers\n", list(SAMPLES.values()))


def test_show_draws_each_format_and_checks_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "show", "abandoned_cart", "--format", "mermaid"]) == 0
    check_mermaid(capsys.readouterr().out)
    assert main(["journeys", "show", "abandoned_cart", "--version", "1", "--format", "svg"]) == 0
    assert ET.fromstring(capsys.readouterr().out).tag == f"{{{SVG_NAMESPACE}}}svg"
    assert main(["journeys", "show", "abandoned_cart"]) == 0
    assert "[cart_reminder] send email" in capsys.readouterr().out

    assert main(["journeys", "show", "abandoned_cart", "--version", "7"]) == 2
    assert "version 7 is not available" in capsys.readouterr().err
    assert main(["journeys", "show", "no_such_journey"]) == 2
    assert "no valid journey 'no_such_journey'" in capsys.readouterr().err


def test_the_front_readme_draws_its_sample_as_generated() -> None:
    readme = default_journeys_dir().parent / "README.md"
    text = readme.read_text()

    assert readme_with_diagrams(text, list(SAMPLES.values()), only=FRONT_README_JOURNEY) == text, \
        "README.md is stale: run `eventflow journeys show --update-readme`"
    assert render_mermaid(build(SAMPLES[FRONT_README_JOURNEY])) in text


def test_update_readme_rewrites_only_the_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "journeys"
    (folder / "definitions").mkdir(parents=True)
    (folder / "templates").mkdir()
    source = default_journeys_dir()
    (folder / "definitions" / "post_purchase.yaml").write_text((source / "definitions" / "post_purchase.yaml")
                                                               .read_text())
    for name in ("purchase_thank_you", "review_request"):
        (folder / "templates" / f"{name}.yaml").write_text((source / "templates" / f"{name}.yaml").read_text())
    stale = ("# mine\n<!-- journey-diagrams:begin (generated by `eventflow journeys show --update-readme`) -->\n"
             "old\n<!-- journey-diagrams:end -->\ntail\n")
    (folder / "README.md").write_text(stale)

    assert main(["journeys", "show", "--update-readme", "--dir", str(folder)]) == 0

    updated = (folder / "README.md").read_text()
    assert updated.startswith("# mine\n") and updated.endswith("tail\n") and "old" not in updated
    assert "s_review_request" in updated and "abandoned_cart" not in updated


def test_the_real_mermaid_cli_renders_every_sample_and_a_highlighted_run(tmp_path: Path) -> None:
    """One ``mmdc`` run (one browser start) over a Markdown file of every diagram; skipped only off CI."""
    mmdc = installed_mermaid_cli()
    if mmdc is None:
        if os.environ.get("CI"):
            pytest.fail("the Mermaid CLI is not provisioned: `eventflow dev provision` installs it")
        pytest.skip("the Mermaid CLI is not provisioned (eventflow dev provision); the subset checker ran")
    diagrams = [build(d) for d in ALL.values()] + [_welcome_run()]
    source = tmp_path / "diagrams.md"
    source.write_text("".join(f"```mermaid\n{render_mermaid(d)}```\n\n" for d in diagrams))

    result = subprocess.run([str(mmdc), "-q", "-i", str(source), "-o", str(tmp_path / "out.md")],
                            capture_output=True, text=True, timeout=180, check=False)

    assert result.returncode == 0, result.stderr[-2000:]
    for index, diagram in enumerate(diagrams, start=1):
        svg = (tmp_path / f"out-{index}.svg").read_text()
        for step_id in diagram.step_ids:
            assert step_id in svg, (diagram.journey_id, step_id)


def test_simulate_prints_the_run_on_the_diagram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    customer = samples.customer()
    start = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    purchase = {**samples.purchase(customer, order_id="ord-d"), "occurred_at": start.isoformat()}
    refund = {**samples.event("OrderRefunded", customer, {"order_id": "ord-d", "reason": "late",
                                                          "amount": {"amount": "49.90", "currency": "EUR"}}),
              "occurred_at": (start + timedelta(days=1)).isoformat()}
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in (purchase, refund)))

    assert main(["journeys", "simulate", "post_purchase", "--events", str(events), "--diagram", "mermaid"]) == 0

    out = capsys.readouterr().out
    chart = check_mermaid(out[out.index("flowchart TD"):])
    # The refund ended it during the delay: the review request and the end were not reached.
    assert chart.classes["taken"] == {"j_trigger", "s_thank_you", "s_wait_for_delivery"}


def _trees() -> st.SearchStrategy[tuple[Any, ...]]:
    """Random step trees (ids made unique afterwards) mixing every kind, nested up to three deep."""
    leaf = st.sampled_from(["send", "delay", "exit", "webhook", "digest"]).map(lambda kind: (kind,))
    return st.recursive(
        st.lists(leaf, min_size=1, max_size=3).map(tuple),
        lambda arms: st.lists(st.one_of(leaf, st.tuples(st.sampled_from(["branch", "wait_for", "split"]),
                                                        arms, arms)), min_size=1, max_size=3).map(tuple),
        max_leaves=12)


def _build_steps(tree: tuple[Any, ...], counter: list[int]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for item in tree:
        counter[0] += 1
        step_id = f"s{counter[0]}"
        match item:
            case ("send",):
                steps.append(SendStep(step_id, SendOptions("email", "hello")))
            case ("delay",):
                steps.append(DelayStep(step_id, duration="1h"))
            case ("exit",):
                steps.append(ExitStep(step_id))
            case ("webhook",):
                steps.append(WebhookStep(step_id, url="https://crm.example.com/x", save_as=step_id))
            case ("digest",):
                steps.append(DigestStep(step_id, event="OrderShipped", window="1d", send=SendOptions("email", "d")))
            case ("branch", first, second):
                steps.append(BranchStep(step_id, cases=(BranchCase("payload.x == 1", _build_steps(first, counter)),),
                                        otherwise=_build_steps(second, counter)))
            case ("wait_for", first, second):
                steps.append(WaitForStep(step_id, event="OrderShipped", timeout="1d",
                                         received=_build_steps(first, counter), timed_out=_build_steps(second, counter)))
            case ("split", first, second):
                steps.append(SplitStep(step_id, variants=(SplitVariant("A", 50, _build_steps(first, counter)),
                                                          SplitVariant("B", 50, _build_steps(second, counter)))))
    return tuple(steps)


def _live(steps: tuple[Any, ...], live: bool = True) -> tuple[set[str], bool]:
    """The steps that can run, and whether control can fall out of the list's end.

    A step runs when the list is live and no earlier step stopped it: an exit stops, a choosing
    step stops when every one of its arms stops (an empty arm falls through).
    """
    found: set[str] = set()
    for step in steps:
        if live:
            found.add(step.id)
        nested = [_live(arm, live) for _, arm, _ in arms(step)]
        for ids, _ in nested:
            found |= ids
        if isinstance(step, ExitStep) or (nested and not any(through for _, through in nested)):
            live = False
    return found, live


def _live_ids(steps: tuple[Any, ...]) -> set[str]:
    return _live(steps)[0]


@given(_trees())
def test_any_step_tree_draws_a_valid_layered_graph(tree: tuple[Any, ...]) -> None:
    definition = JourneyDefinition(id="random", version=1, trigger_event="PurchaseCompleted",
                                   steps=_build_steps(tree, [0]))
    diagram = build(definition)
    ids = _step_ids(definition)

    chart = check_mermaid(render_mermaid(diagram))
    assert set(chart.nodes) == {node_id(s) for s in ids} | {"j_trigger", "j_end"}
    layer = layers(diagram)
    assert all(layer[e.target] > layer[e.source] for e in diagram.edges)
    reached, frontier = {TRIGGER}, [TRIGGER]
    while frontier:
        for edge in diagram.outgoing(frontier.pop()):
            if edge.target not in reached:
                reached.add(edge.target)
                frontier.append(edge.target)
    live = _live_ids(definition.steps)
    assert reached & ids == live  # exactly the steps that can run lie on a path from the trigger
    assert all(("unreachable: every way here exits first" in n.lines) == (n.id not in live)
               for n in diagram.nodes if n.id in ids)
    assert all(diagram.outgoing(n.id) for n in diagram.nodes if n.kind not in ("exit", "end"))
    root = ET.fromstring(render_svg(diagram))
    assert ids <= {t.text for t in root.iter(f"{{{SVG_NAMESPACE}}}title")}


_CATALOG_JOURNEY = """\
id: drawn_from_catalog
version: 1
trigger: {event: PurchaseCompleted}
entry: {rule: once_per_key, key: payload.order_id}
steps:
  - id: thanks
    send: {channel: email, template: purchase_thank_you}
"""


def test_show_draws_any_published_version_from_the_catalog(kafka_config: dict[str, str], unique: str,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from consumer.catalog_admin import publish_path
    from consumer.catalog_topic import CatalogWriter
    from tests.catalog_keys import CATALOG_KEYS, CATALOG_KEYS_TEXT

    writer = CatalogWriter(kafka_config, f"test-catalog-show-{unique}", keys=CATALOG_KEYS)
    writer.ensure_topic()
    (tmp_path / "definitions").mkdir()
    shutil.copytree(default_journeys_dir() / "templates", tmp_path / "templates")
    definition = tmp_path / "definitions" / "drawn_from_catalog.yaml"
    definition.write_text(_CATALOG_JOURNEY)
    publish_path(writer, definition, author="t", summary="v1")
    definition.write_text(_CATALOG_JOURNEY + "  - id: later\n    delay: {duration: 2d}\n")
    publish_path(writer, definition, author="t", summary="v2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("EVENTFLOW_CATALOG_TOPIC", writer.topic)
    monkeypatch.setenv("EVENTFLOW_CATALOG_SIGNING_KEYS", CATALOG_KEYS_TEXT)
    capsys.readouterr()  # the publishing's log lines

    assert main(["journeys", "show", "drawn_from_catalog", "--catalog", "--version", "1", "--format", "mermaid"]) == 0
    first = check_mermaid(capsys.readouterr().out)
    assert main(["journeys", "show", "drawn_from_catalog", "--catalog"]) == 0
    latest = capsys.readouterr().out

    assert "s_thanks" in first.nodes and "s_later" not in first.nodes
    assert latest.startswith("journey drawn_from_catalog v2") and "[later] delay 2d" in latest
    assert main(["journeys", "show", "drawn_from_catalog", "--catalog", "--version", "9"]) == 2
    assert "published versions: 1, 2" in capsys.readouterr().err
