"""docs/deploy.md as written: its values examples render with helm, its alert table lists every alert."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helm.chart import REPO, TRIAL, Rendered, RenderError, helm_template, prometheus_rules

DEPLOY = REPO / "docs" / "deploy.md"


def _section(heading: str) -> str:
    text = DEPLOY.read_text()
    start = text.index(f"\n## {heading}")
    following = text.find("\n## ", start + 1)
    return text[start:following if following != -1 else None]


def _yaml_block(section: str) -> str:
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found is not None, "no yaml block in the section"
    # Blocks indented inside a list item carry the item's indentation.
    lines = found.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def _render(helm: Path, tmp_path: Path, example: str, *, with_trial: bool = False) -> Rendered:
    values = tmp_path / "values.yaml"
    values.write_text(example)
    return helm_template(helm, values_files=[TRIAL, values] if with_trial else [values])


def test_the_install_example_renders_on_its_own_without_the_setup_job_temporal_cloud_refuses(
        helm: Path, tmp_path: Path) -> None:
    rendered = _render(helm, tmp_path, _yaml_block(_section("3. Install")))
    assert rendered.env("worker")["TEMPORAL_ADDRESS"]["value"].endswith(".tmprl.cloud:7233")
    jobs = [job["metadata"]["name"] for job in rendered.of_kind("Job")]
    assert not any(name.endswith("-temporal-setup") for name in jobs), jobs


def test_the_catalog_seed_example_renders(helm: Path, tmp_path: Path) -> None:
    example = _yaml_block(_section("4a. The journey catalog topic"))
    rendered = _render(helm, tmp_path, example, with_trial=True)
    assert rendered.one("Job", "-catalog-seed")["spec"]["template"]["spec"]["containers"][0]["args"][:2] == [
        "journeys", "publish"]


def test_the_bare_defaults_do_not_render_and_say_why(helm: Path) -> None:
    with pytest.raises(RenderError) as raised:
        helm_template(helm, values_files=[])
    assert "providers.email.provider is required" in raised.value.stderr


def test_the_alert_table_lists_every_alert(helm: Path) -> None:
    from tests.helm.chart import ALL_ON

    rules = prometheus_rules(helm_template(helm, values_files=[ALL_ON]))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    table = set(re.findall(r"^\| `(Eventflow\w+)` \|", _section("7. Metrics, alerts and the dashboard"), re.M))
    assert table == alerts
