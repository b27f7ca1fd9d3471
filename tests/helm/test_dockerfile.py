"""The Dockerfile cannot be built here (no Docker engine); these checks keep it in step with the code.

They catch the drift that breaks an image silently: a new package not copied, a folder the
runtime variables point at but nothing copies, a user id that differs from the chart's.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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
            assert name in settings.variables(), f"{name} is not a declared setting; the process would refuse it"


def test_runs_as_the_non_root_user_and_port_the_chart_expects() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = re.search(r"^ARG UID=(\d+)$", DOCKERFILE, flags=re.M)
    assert uid and int(uid.group(1)) == values["podSecurityContext"]["runAsUser"] != 0
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", _stages()["runtime"], flags=re.M)
    assert f"EXPOSE {values['metricsPort']}" in DOCKERFILE
    assert 'ENTRYPOINT ["eventflow"]' in DOCKERFILE


def _locked(path: str) -> dict[str, tuple[str, int]]:
    """``name -> (version, hash count)`` of a lock file written by ``make lock``."""
    text = (REPO / path).read_text()
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split("\n", 1)[0]
        if head.startswith("#") or not head.strip():
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", head)
        assert match, f"{path}: {head!r} is not pinned with =="
        found[canonicalize_name(match.group(1))] = (match.group(2), block.count("--hash=sha256:"))
    return found


def test_the_locks_pin_every_dependency_with_hashes_and_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime, dev = _locked("requirements.lock"), _locked("requirements-dev.lock")
    for lock, requirements in ((runtime, project["dependencies"]),
                               (dev, project["dependencies"] + project["optional-dependencies"]["test"])):
        for line in requirements:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{name} is not locked: run `make lock`"
            assert lock[name][0] in requirement.specifier, f"locked {name}=={lock[name][0]} violates {requirement}"
        assert all(hashes > 0 for _, hashes in lock.values())
    assert {name: version for name, (version, _) in runtime.items()} == {
        name: dev[name][0] for name in runtime}, "the image and the venv run the same versions"
    assert Version(runtime["jinja2"][0]) >= Version("3.1.6"), "older Jinja2 releases have sandbox escapes"
    assert "setuptools" in runtime, "the build backend is locked (installs use --no-build-isolation)"


def test_the_image_and_the_venv_install_only_from_the_locks() -> None:
    build = _stages()["build"].replace("\\\n", " ")
    lock_install = build.index("pip install --require-hashes -r requirements.lock")
    project_install = build.index("pip install --no-deps --no-build-isolation .")
    assert lock_install < project_install and build.count("pip install") == 2
    assert _sent_to_build("requirements.lock")
    makefile = (REPO / "Makefile").read_text()
    venv_recipe = makefile.split("$(BIN)/eventflow: pyproject.toml $(DEV_LOCK)\n", 1)[1].split("\n\n", 1)[0]
    installs = [line.strip() for line in venv_recipe.splitlines() if "pip install" in line]
    assert installs == ["$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)",
                        "$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ."]


def test_the_declared_floors_admit_no_release_without_the_api_the_code_uses() -> None:
    """A fresh install at the lowest version pyproject allows must import what the code imports."""
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    declared = {canonicalize_name(Requirement(line).name): Requirement(line) for line in optional}
    # tests/events/test_sources.py uses `cloudevents.core`, which 1.x does not have.
    assert "1.12.0" not in declared[canonicalize_name("cloudevents")].specifier
