"""The chart's alert rules pass `promtool check rules` and a unit test per alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.chart import ALL_ON, Manifest, helm_template, prometheus_rules

UNIT_TESTS = Path(__file__).parent / "alerts_test.yaml"


@pytest.fixture(scope="module")
def rules(helm: Path) -> Manifest:
    return prometheus_rules(helm_template(helm, values_files=[ALL_ON]))


@pytest.fixture
def rules_dir(rules: Manifest, tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def test_promtool_accepts_the_rules(promtool: Path, rules_dir: Path) -> None:
    result = subprocess.run([str(promtool), "check", "rules", "rules.yaml"], cwd=rules_dir,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test(rules: Manifest) -> None:
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in alerts:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"no unit test shows {alert} firing"
        assert any(not case["exp_alerts"] for case in mine), f"no unit test shows {alert} quiet"


def test_promtool_unit_tests_pass(promtool: Path, rules_dir: Path) -> None:
    result = subprocess.run([str(promtool), "test", "rules", UNIT_TESTS.name], cwd=rules_dir,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
