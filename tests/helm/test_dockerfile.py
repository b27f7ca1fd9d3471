"""The Dockerfile cannot be built here (no Docker engine); these checks keep it in step with the code.

They catch the drift that breaks an image silently: a new package not copied, a folder the
runtime variables point at but nothing copies, a user id that differs from the chart's.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib

import yaml

from eventflow import settings
from tests.helm.chart import CHART, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
IGNORE = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
          if line.strip() and not line.startswith("#")]


def _stages() -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\w+)$", DOCKERFILE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _sent_to_build(path: str) -> bool:
    """Applies .dockerignore's rules (last match wins) to a top-level path."""
    included = True
    for rule in IGNORE:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        if fnmatch.fnmatch(path, pattern.rstrip("/")) or fnmatch.fnmatch(path + "/", pattern):
            included = negated
    return included


def _env(stage: str) -> dict[str, str]:
    body = _stages()[stage].replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in body.splitlines():
        if line.startswith("ENV "):
            found.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return found


def test_every_package_is_copied_into_the_build_stage() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    build = _stages()["build"]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", build, flags=re.M), f"{package} is not copied"
        assert _sent_to_build(package), f".dockerignore keeps {package} out of the build context"
    assert _sent_to_build("pyproject.toml") and not _sent_to_build("tests") and not _sent_to_build(".git")


def test_runtime_points_at_the_folders_it_copies_and_declares_its_variables() -> None:
    runtime = _stages()["runtime"]
    env = _env("runtime")
    assert f"COPY avro {env['EVENTFLOW_AVRO_DIR']}" in runtime
    for kind in ("definitions", "templates"):
        assert f"COPY journeys/{kind} {env['EVENTFLOW_JOURNEYS_DIR']}/{kind}" in runtime
    assert _sent_to_build("avro") and _sent_to_build("journeys")
    for name in env:
        if name.startswith("EVENTFLOW_"):
            assert name in settings.SETTINGS, f"{name} is not a declared setting; the process would refuse it"


def test_runs_as_the_non_root_user_and_port_the_chart_expects() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = re.search(r"^ARG UID=(\d+)$", DOCKERFILE, flags=re.M)
    assert uid and int(uid.group(1)) == values["podSecurityContext"]["runAsUser"] != 0
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", _stages()["runtime"], flags=re.M)
    assert f"EXPOSE {values['metricsPort']}" in DOCKERFILE
    assert 'ENTRYPOINT ["eventflow"]' in DOCKERFILE
