"""Rendering the chart with the real helm binary, and reading what the manifests reference."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from eventflow.webhooks.server import WebhookMetrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "eventflow"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
TRIAL = CHART / "ci" / "trial-values.yaml"
NAMESPACE = "eventflow"

Manifest = dict[str, Any]


class RenderError(Exception):
    """helm exited non-zero; ``stderr`` holds its message."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


@dataclass(frozen=True)
class Rendered:
    """The manifests of one ``helm template`` run."""

    manifests: tuple[Manifest, ...]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> Manifest:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[m['metadata']['name'] for m in found]}"
        return found[0]

    def deployment(self, component: str) -> Manifest:
        return self.one("Deployment", f"-{component}")

    def container(self, component: str) -> Manifest:
        containers = self.deployment(component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def env(self, component: str) -> dict[str, Manifest]:
        return {item["name"]: item for item in self.container(component)["env"]}


def helm_template(helm: Path, *, values_files: Sequence[Path] = (TRIAL,), set_values: Mapping[str, str] | None = None,
                  set_files: Mapping[str, Path] | None = None, release: str = "ef") -> Rendered:
    """Runs ``helm template`` and parses every document.

    The default values file is the trial one (outbox providers, development mode): the chart has
    no default providers, so a render without any values file fails.
    """
    argv = [str(helm), "template", release, str(CHART), "--namespace", NAMESPACE]
    for path in values_files:
        argv += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        argv += ["--set", f"{key}={value}"]
    for key, path in (set_files or {}).items():
        argv += ["--set-file", f"{key}={path}"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return Rendered(tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc))


def journeys_set_files(folder: Path = REPO / "journeys", *, sources: bool = False, audiences: bool = False,
                       topics: bool = False) -> dict[str, Path]:
    """``--set-file`` arguments shipping a journeys folder, as docs/deploy.md tells SREs to.

    With ``sources``, also its ``sources.yaml`` and every ``.avsc`` file outside definitions/ and
    templates/, keyed by path (dots escaped, as ``--set-file`` needs); with ``audiences`` its segment
    files (``attributes.yaml`` included); with ``topics`` its ``topics.yaml``.
    """
    files: dict[str, Path] = {}
    for kind in ("definitions", "templates") + (("audiences",) if audiences else ()):
        for path in sorted((folder / kind).glob("*.yaml")):
            files[f"journeys.{kind}.{path.stem}"] = path
    if topics:
        files["journeys.topics"] = folder / "topics.yaml"
    if sources and (folder / "sources.yaml").exists():
        files["journeys.sources"] = folder / "sources.yaml"
        for path in sorted(folder.rglob("*.avsc")):
            relative = path.relative_to(folder).as_posix()
            if not relative.startswith(("definitions/", "templates/")):
                files["journeys.sourceSchemas." + relative.replace(".", "\\.")] = path
    return files


def pod_files(rendered: Rendered, pod: Manifest, under: str) -> dict[str, str]:
    """The files a pod's first container sees below ``under`` from the chart's ConfigMaps.

    Lays the volumes out as the kubelet does: a ConfigMap volume mounted at a directory shows one
    file per key there, one mounted with ``subPath`` shows that key's text at the mount path.
    Returns path relative to ``under`` -> text.
    """
    config_maps = {m["metadata"]["name"]: m.get("data") or {} for m in rendered.of_kind("ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files: dict[str, str] = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        path = str(mount["mountPath"])
        if source is None or source["name"] not in config_maps or not (path + "/").startswith(under.rstrip("/") + "/"):
            continue  # not a ConfigMap, one managed outside the chart, or mounted elsewhere
        data = config_maps[source["name"]]
        relative = path[len(under.rstrip("/")) + 1:]
        if "subPath" in mount:
            files[relative] = data[mount["subPath"]]
        else:
            files.update({f"{relative}/{key}": text for key, text in data.items()})
    return files


def write_files(files: Mapping[str, str], root: Path) -> Path:
    """Writes ``pod_files`` output below ``root`` (a stand-in for the pod's folder)."""
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def prometheus_rules(rendered: Rendered) -> Manifest:
    """The rule groups of the PrometheusRule, as a plain Prometheus rules file."""
    return {"groups": rendered.one("PrometheusRule")["spec"]["groups"]}


def dashboard(rendered: Rendered) -> Manifest:
    config_map = rendered.one("ConfigMap", "-dashboard")
    parsed: Manifest = json.loads(config_map["data"]["eventflow.json"])
    return parsed


def dashboard_exprs(board: Manifest) -> Iterator[str]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield query["query"]


def rule_exprs(rules: Manifest) -> Iterator[str]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


_METRIC = re.compile(r"\b((?:eventflow|temporal)_[a-z0-9_]+)")


def metric_names(exprs: Iterator[str]) -> set[str]:
    """Every Eventflow or Temporal series name a set of PromQL expressions reads."""
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Every series name a scrape can return: sample names, plus the suffixes each TYPE implies."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "summary":
                names.update({f"{name}_sum", f"{name}_count"})
            elif kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _webhook_service_series() -> frozenset[str]:
    registry = CollectorRegistry()
    WebhookMetrics(registry)
    return frozenset(exposed_names(generate_latest(registry).decode()))


#: Series only the webhooks service (`eventflow webhooks`) serves, from its metrics class itself.
WEBHOOK_SERVICE_SERIES = _webhook_service_series()
