"""The chart ships event sources beside the journeys, and seeds the journey catalog topic.

Sources: the rendered consumer and worker must see ``sources.yaml`` and the schema files it names at
the paths their settings read (``$EVENTFLOW_JOURNEYS_DIR/sources.yaml``), laid out from the rendered
ConfigMaps and mounts as the kubelet does. Catalog: the seed hook Job runs for real against the test
Kafka with the environment the chart renders, and a second run writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from consumer.catalog_topic import CatalogWriter
from core.settings import JourneySettings
from devstack import Endpoints
from eventflow.settings import load_tools
from events.sources import SOURCES_FILE, load_sources
from journeys.loader import JourneyDefinitionError, load_all
from tests.catalog_keys import CATALOG_KEYS_TEXT
from tests.events.shop import shop_journeys
from tests.helm.chart import (
    ALL_ON,
    REPO,
    TRIAL,
    Manifest,
    Rendered,
    RenderError,
    helm_template,
    journeys_set_files,
    pod_files,
    write_files,
)

COMPONENTS = ("consumer", "worker")
SHOP_JOURNEYS = {"big_order", "shipped"}


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return shop_journeys(tmp_path / "shop", "orders")


def _pod(rendered: Rendered, component: str) -> Manifest:
    pod: Manifest = rendered.deployment(component)["spec"]["template"]["spec"]
    return pod


def _job(rendered: Rendered) -> Manifest:
    [job] = [m for m in rendered.of_kind("Job") if m["metadata"]["name"].endswith("-catalog-seed")]
    return job


def _checksum(rendered: Rendered, component: str) -> str:
    return str(rendered.deployment(component)["spec"]["template"]["metadata"]["annotations"]["checksum/journeys"])


def _values_file(tmp_path: Path, values: Manifest) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_the_pods_see_sources_and_schemas_where_their_settings_read_them(
        helm: Path, shop: Path, tmp_path: Path) -> None:
    rendered = helm_template(helm, set_files=journeys_set_files(shop, sources=True))
    for component in COMPONENTS:
        env = {name: str(item["value"]) for name, item in rendered.env(component).items() if "value" in item}
        journeys_dir = JourneySettings.load(env).journeys_dir
        assert journeys_dir is not None
        files = pod_files(rendered, _pod(rendered, component), str(journeys_dir))
        # eventflow/consume.py reads default_journeys_dir() / SOURCES_FILE.
        assert files[SOURCES_FILE] == (shop / SOURCES_FILE).read_text().rstrip("\n")
        assert {p for p in files if p.endswith(".avsc")} == {
            p.relative_to(shop).as_posix() for p in shop.rglob("*.avsc")}

        pod_dir = write_files(files, tmp_path / component)
        sources = load_sources(pod_dir / SOURCES_FILE)
        assert {s.name for s in sources} == {"shop-shipping", "shop-orders"}
        for source in sources:
            for ref in source.schemas.values():
                assert ref.path is not None and ref.path.is_file(), f"{ref.path} is not mounted"
        # The shop's journeys trigger on source event types: they validate only with the sources
        # and their schemas in place.
        assert {d.id for d in load_all(pod_dir)} == SHOP_JOURNEYS


def test_without_the_source_file_the_shop_journeys_do_not_validate(helm: Path, shop: Path, tmp_path: Path) -> None:
    # The check above can fail: the same journeys shipped without sources.yaml are refused.
    rendered = helm_template(helm, set_files=journeys_set_files(shop))
    assert not [m for m in rendered.of_kind("ConfigMap") if m["metadata"]["name"].endswith("-journey-sources")]
    files = pod_files(rendered, _pod(rendered, "consumer"), "/etc/eventflow/journeys")
    assert SOURCES_FILE not in files
    with pytest.raises(JourneyDefinitionError, match="unknown event type"):
        load_all(write_files(files, tmp_path / "pod"))


def test_a_changed_source_schema_changes_the_checksum_that_rolls_the_pods(
        helm: Path, shop: Path, tmp_path: Path) -> None:
    files = journeys_set_files(shop, sources=True)
    before = helm_template(helm, set_files=files)
    key = next(k for k in files if k.endswith("OrderCancelled\\.avsc"))
    edited = tmp_path / "OrderCancelled.avsc"
    edited.write_text(files[key].read_text().replace('"type"', ' "type"', 1))
    after = helm_template(helm, set_files={**files, key: edited})
    again = helm_template(helm, set_files=files)
    without_sources = helm_template(helm, set_files=journeys_set_files(shop))
    for component in COMPONENTS:
        assert _checksum(after, component) != _checksum(before, component)
        assert _checksum(again, component) == _checksum(before, component)
        assert _checksum(without_sources, component) != _checksum(before, component)


@pytest.mark.parametrize(("schemas", "message"), [
    ({"../outside.avsc": "{}"}, "'..' segments"),
    ({"/etc/passwd": "{}"}, "relative path"),
    ({"definitions/x.avsc": "{}"}, "definitions/ or templates/"),
    ({"a/b.avsc": "{}", "a__b.avsc": "{}"}, "flatten to the same ConfigMap key"),
])
def test_schema_paths_that_cannot_be_mounted_are_refused(
        helm: Path, tmp_path: Path, schemas: dict[str, str], message: str) -> None:
    values = {"journeys": {"definitions": {"d": "id: d"}, "templates": {"t": "id: t"}, "sources": "sources: []",
                           "sourceSchemas": schemas}}
    with pytest.raises(RenderError, match=message):
        helm_template(helm, values_files=[TRIAL, _values_file(tmp_path, values)])


def test_sources_need_mounted_journeys_and_schemas_need_a_source_file(helm: Path) -> None:
    with pytest.raises(RenderError, match="journeys.sources needs journeys.definitions"):
        helm_template(helm, set_values={"journeys.sources": "sources: []"})
    with pytest.raises(RenderError, match="sourceSchemas needs journeys.sources"):
        helm_template(helm, set_values={"journeys.existingDefinitionsConfigMap": "d",
                                        "journeys.existingTemplatesConfigMap": "t",
                                        "journeys.sourceSchemas.x\\.avsc": "schema"})
    # With externally managed journeys ConfigMaps the chart still ships the source file.
    external = helm_template(helm, set_values={"journeys.existingDefinitionsConfigMap": "d",
                                               "journeys.existingTemplatesConfigMap": "t",
                                               "journeys.sources": "sources: []"})
    assert pod_files(external, _pod(external, "worker"), "/etc/eventflow/journeys") == {
        SOURCES_FILE: "sources: []"}


def test_catalog_mode_reaches_the_consumer_and_the_worker_only_when_chosen(helm: Path) -> None:
    files_mode = helm_template(helm)
    kafka_mode = helm_template(helm, set_values={"catalog.source": "kafka", "catalog.topic": "ops.journeys",
                                                 "catalog.signing.secretName": "catalog-signing"})
    for component in COMPONENTS:
        assert not [name for name in files_mode.env(component) if name.startswith("EVENTFLOW_CATALOG_")]
        env = kafka_mode.env(component)
        assert env["EVENTFLOW_CATALOG_SOURCE"]["value"] == "kafka"
        assert env["EVENTFLOW_CATALOG_TOPIC"]["value"] == "ops.journeys"
        assert env["EVENTFLOW_CATALOG_STARTUP_TIMEOUT_SECONDS"]["value"] == "20"
        assert env["EVENTFLOW_CATALOG_SIGNING_KEYS"]["valueFrom"]["secretKeyRef"] == {
            "name": "catalog-signing", "key": "keys"}
        assert "EVENTFLOW_CATALOG_ALLOW_UNSIGNED" not in env
    assert not [m for m in files_mode.of_kind("Job") if m["metadata"]["name"].endswith("-catalog-seed")]
    with pytest.raises(RenderError, match="catalog"):
        helm_template(helm, set_values={"catalog.source": "git"})


def test_catalog_mode_needs_signing_keys_outside_dev_mode_and_dev_mode_accepts_unsigned_entries(helm: Path) -> None:
    assert helm_template(helm, values_files=[ALL_ON], set_values={"catalog.source": "kafka"})
    for production in ({"catalog.source": "kafka", "catalog.seedJob.enabled": "false"},
                       {"catalog.source": "files", "catalog.seedJob.enabled": "true"}):
        with pytest.raises(RenderError, match="catalog.signing.secretName is required"):
            helm_template(helm, values_files=[ALL_ON], set_values={**production, "catalog.signing.secretName": ""})
    trial = helm_template(helm, values_files=[TRIAL], set_values={"catalog.source": "kafka"})
    for component in COMPONENTS:
        env = trial.env(component)
        assert env["EVENTFLOW_CATALOG_ALLOW_UNSIGNED"]["value"] == "true"
        assert "EVENTFLOW_CATALOG_SIGNING_KEYS" not in env
    rotating = helm_template(helm, set_values={"catalog.source": "kafka", "catalog.signing.secretName": "s",
                                               "catalog.signing.signingKeyId": "k2"})
    assert rotating.env("worker")["EVENTFLOW_CATALOG_SIGNING_KEY_ID"]["value"] == "k2"


def test_the_seed_job_is_a_locked_down_post_hook_that_publishes_the_mounted_journeys(helm: Path) -> None:
    rendered = helm_template(helm, values_files=[ALL_ON])
    job = _job(rendered)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["eventflow"]
    assert container["args"][:3] == ["journeys", "publish", "/etc/eventflow/journeys"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == _pod(rendered, "worker")["securityContext"]
    assert container["securityContext"] == rendered.container("worker")["securityContext"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    # It mounts exactly the journeys files the worker reads.
    assert pod_files(rendered, pod, "/etc/eventflow/journeys") == pod_files(
        rendered, _pod(rendered, "worker"), "/etc/eventflow/journeys")

    env = {item["name"]: item for item in container["env"]}
    worker = rendered.env("worker")
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == worker["KAFKA_BOOTSTRAP_SERVERS"]
    assert env["EVENTFLOW_SCHEMA_REGISTRY_URL"] == worker["EVENTFLOW_SCHEMA_REGISTRY_URL"]
    assert env["EVENTFLOW_SCHEMA_REGISTRY_PASSWORD"] == worker["EVENTFLOW_SCHEMA_REGISTRY_PASSWORD"]
    # The publisher identity replaces the release's, plain or secret; other settings carry over.
    assert env["EVENTFLOW_LIBRDKAFKA_SASL_USERNAME"] == {"name": "EVENTFLOW_LIBRDKAFKA_SASL_USERNAME",
                                                         "value": "eventflow-publisher"}
    assert env["EVENTFLOW_LIBRDKAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "catalog-publisher"
    assert worker["EVENTFLOW_LIBRDKAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] != "catalog-publisher"
    assert env["EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL"] == worker["EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL"]
    assert not [name for name in env if name.startswith(("TEMPORAL_", "SENDGRID", "TWILIO", "EVENTFLOW_PAYLOAD"))]
    # It signs what it publishes with the release's catalog keys.
    assert env["EVENTFLOW_CATALOG_SIGNING_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "catalog-signing",
                                                                                  "key": "keys"}
    with pytest.raises(RenderError, match="catalog.seedJob.enabled needs journeys"):
        helm_template(helm, set_values={"catalog.seedJob.enabled": "true"})


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventflow.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def _results(stdout: str) -> set[tuple[str, str]]:
    """``(published|unchanged, journey)`` of each result line (log lines share stdout)."""
    return {(line.split()[0], line.split()[1]) for line in stdout.splitlines()
            if line.startswith(("published ", "unchanged "))}


@pytest.mark.timeout(240)
def test_the_seed_job_publishes_to_the_real_catalog_topic_and_a_rerun_writes_nothing(
        helm: Path, shop: Path, tmp_path: Path, endpoints: Endpoints, unique: str) -> None:
    topic = f"helm-catalog-{unique}"
    rendered = helm_template(helm, set_values={
        "kafka.bootstrapServers": endpoints.kafka_bootstrap_servers.replace(",", "\\,"),
        "catalog.seedJob.enabled": "true", "catalog.source": "kafka", "catalog.topic": topic,
        "catalog.signing.secretName": "catalog-signing", "logFormat": "console",
    }, set_files=journeys_set_files(shop, sources=True))
    job = _job(rendered)
    [container] = job["spec"]["template"]["spec"]["containers"]
    journeys = write_files(pod_files(rendered, job["spec"]["template"]["spec"], "/etc/eventflow/journeys"),
                           tmp_path / "journeys")
    remap = {"/etc/eventflow/journeys": str(journeys), "/tmp/eventflow": str(tmp_path / "cache")}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "KAFKA_", "TEMPORAL_"))}
    secrets = {"catalog-signing": CATALOG_KEYS_TEXT}  # the Secrets this test stands in for
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["name"]]
            continue
        env[item["name"]] = remap.get(str(item["value"]), str(item["value"]))
    env["PYTHONPATH"] = str(REPO)
    argv = [remap.get(arg, arg) for arg in container["args"]]

    first = _run(argv, env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _results(first.stdout) == {("published", journey) for journey in SHOP_JOURNEYS}, first.stdout
    second = _run(argv, env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _results(second.stdout) == {("unchanged", journey) for journey in SHOP_JOURNEYS}, second.stdout

    tools = load_tools(env)
    catalog = CatalogWriter(tools.core.kafka.client_config(), topic, keys=tools.catalog.trust()).read()
    assert set(catalog.journey_ids) == SHOP_JOURNEYS
    for journey in SHOP_JOURNEYS:
        [entry] = catalog.history(journey)
        assert entry.author == "helm"
        assert entry.summary.startswith("helm install of release ef, revision 1, chart ")
