"""The chart ships event sources, segments and topics beside the journeys, and seeds the catalog topic.

Sources: the rendered consumer and worker must see ``sources.yaml`` and the schema files it names at
the paths their settings read (``$EVENTFLOW_JOURNEYS_DIR/sources.yaml``), laid out from the rendered
ConfigMaps and mounts as the kubelet does; segments (``audiences/``) and ``topics.yaml`` likewise.
Catalog: the seed hook Job's steps (journeys, then segments) run for real against the test Kafka with
the environment the chart renders, and a second run writes nothing.
"""

from __future__ import annotations

import os
import shutil
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
from journeys.segments import SegmentError, load_segments
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


@pytest.fixture
def shop_with_segments(shop: Path) -> Path:
    """The shop's journeys with the repository's segments (one of them a consent condition on a
    topic) and the topics file that declares that topic."""
    shutil.copytree(REPO / "journeys" / "audiences", shop / "audiences")
    shutil.copy(REPO / "journeys" / "topics.yaml", shop / "topics.yaml")
    return shop


SHOP_SEGMENTS = {"lapsed_gold", "repeat_buyers"}


def _pod(rendered: Rendered, component: str) -> Manifest:
    pod: Manifest = rendered.deployment(component)["spec"]["template"]["spec"]
    return pod


def _job(rendered: Rendered) -> Manifest:
    [job] = [m for m in rendered.of_kind("Job") if m["metadata"]["name"].endswith("-catalog-seed")]
    return job


def _steps(job: Manifest) -> list[Manifest]:
    """The Job's containers in the order they run: init containers one after another, then the rest."""
    pod = job["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


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


def test_the_pods_see_segments_and_topics_and_the_seed_job_publishes_segments_after_the_journeys(
        helm: Path, shop_with_segments: Path, tmp_path: Path) -> None:
    shipped = journeys_set_files(shop_with_segments, sources=True, audiences=True, topics=True)
    rendered = helm_template(helm, values_files=[ALL_ON], set_files=shipped)
    job = _job(rendered)
    for name, pod in [("consumer", _pod(rendered, "consumer")), ("worker", _pod(rendered, "worker")),
                      ("catalog-seed", job["spec"]["template"]["spec"])]:
        files = pod_files(rendered, pod, "/etc/eventflow/journeys")
        assert {path for path in files if path.startswith("audiences/")} == {
            f"audiences/{path.name}" for path in (shop_with_segments / "audiences").glob("*.yaml")}, name
        assert files["topics.yaml"] == (shop_with_segments / "topics.yaml").read_text().rstrip("\n")
        # What the consumer (files mode) evaluates and `segments publish` validates: every segment loads,
        # the consent condition's topic found in the mounted topics file.
        assert {s.id for s in load_segments(write_files(files, tmp_path / name))} == SHOP_SEGMENTS
    # Both steps mount what the worker reads; journeys run first (an init container), segments after.
    journeys_step, segments_step = _steps(job)
    assert (journeys_step["name"], journeys_step["args"][:3]) == (
        "catalog-seed-journeys", ["journeys", "publish", "/etc/eventflow/journeys"])
    assert (segments_step["name"], segments_step["args"][:3]) == (
        "catalog-seed", ["segments", "publish", "/etc/eventflow/journeys"])
    assert journeys_step["env"] == segments_step["env"]
    assert journeys_step["volumeMounts"] == segments_step["volumeMounts"]
    assert journeys_step["args"][3:] == segments_step["args"][3:]  # the same author and message
    # Without segments the Job is the one journeys step it was.
    plain = _steps(_job(helm_template(helm, values_files=[ALL_ON], set_files=journeys_set_files(shop_with_segments))))
    assert [(step["name"], step["args"][0]) for step in plain] == [("catalog-seed", "journeys")]


def test_without_the_topics_file_a_consent_segment_does_not_validate(
        helm: Path, shop_with_segments: Path, tmp_path: Path) -> None:
    # The check above can fail: repeat_buyers' consent topic is declared only in topics.yaml.
    rendered = helm_template(helm, set_files=journeys_set_files(shop_with_segments, audiences=True))
    files = pod_files(rendered, _pod(rendered, "consumer"), "/etc/eventflow/journeys")
    assert "topics.yaml" not in files and "audiences/repeat_buyers.yaml" in files
    with pytest.raises(SegmentError, match="unknown topic 'product_news'"):
        load_segments(write_files(files, tmp_path / "pod"))


def test_a_changed_segment_or_topics_file_changes_the_checksum_that_rolls_the_pods(
        helm: Path, shop_with_segments: Path, tmp_path: Path) -> None:
    files = journeys_set_files(shop_with_segments, audiences=True, topics=True)
    before = helm_template(helm, set_files=files)
    edited = tmp_path / "lapsed_gold.yaml"
    edited.write_text(files["journeys.audiences.lapsed_gold"].read_text().replace("60d", "90d"))
    changed_segment = helm_template(helm, set_files={**files, "journeys.audiences.lapsed_gold": edited})
    topics = tmp_path / "topics.yaml"
    topics.write_text(files["journeys.topics"].read_text().replace("default: opted_out", "default: opted_in"))
    changed_topics = helm_template(helm, set_files={**files, "journeys.topics": topics})
    again = helm_template(helm, set_files=files)
    without = helm_template(helm, set_files=journeys_set_files(shop_with_segments))
    for component in COMPONENTS:
        assert _checksum(again, component) == _checksum(before, component)
        for other in (changed_segment, changed_topics, without):
            assert _checksum(other, component) != _checksum(before, component)
    # Shipping none keeps the checksum it had before segments and topics could be shipped.
    assert _checksum(without, "worker") == _checksum(helm_template(
        helm, set_files=journeys_set_files(shop_with_segments)), "worker")


def test_segments_and_topics_need_mounted_journeys_and_valid_names(helm: Path) -> None:
    with pytest.raises(RenderError, match="journeys.audiences and journeys.topics need journeys.definitions"):
        helm_template(helm, set_values={"journeys.audiences.gold": "id: gold"})
    with pytest.raises(RenderError, match="journeys.audiences and journeys.topics need journeys.definitions"):
        helm_template(helm, set_values={"journeys.topics": "topics: []"})
    external = {"journeys.existingDefinitionsConfigMap": "d", "journeys.existingTemplatesConfigMap": "t"}
    with pytest.raises(RenderError, match="either inline audiences or existingAudiencesConfigMap"):
        helm_template(helm, set_values={**external, "journeys.audiences.gold": "id: gold",
                                        "journeys.existingAudiencesConfigMap": "segments"})
    with pytest.raises(RenderError, match="must be a segment id"):
        helm_template(helm, set_values={**external, "journeys.audiences.Gold-Buyers": "id: gold"})
    # An external ConfigMap of segments is mounted as audiences/ and makes the seed Job publish them.
    rendered = helm_template(helm, set_values={**external, "journeys.existingAudiencesConfigMap": "segments",
                                               "catalog.seedJob.enabled": "true"})
    pod = _pod(rendered, "consumer")
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"].endswith("/audiences")]
    assert {v["name"]: v for v in pod["volumes"]}[mount["name"]]["configMap"]["name"] == "segments"
    assert [step["args"][0] for step in _steps(_job(rendered))] == ["journeys", "segments"]


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventflow.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def _results(stdout: str) -> set[tuple[str, str]]:
    """``(published|unchanged, journey)`` of each result line (log lines share stdout)."""
    return {(line.split()[0], line.split()[1]) for line in stdout.splitlines()
            if line.startswith(("published ", "unchanged "))}


def _step_env(step: Manifest, remap: dict[str, str]) -> dict[str, str]:
    """The environment one step of the Job runs with: the rendered values, the Secrets stood in for."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTFLOW_", "KAFKA_", "TEMPORAL_"))}
    secrets = {"catalog-signing": CATALOG_KEYS_TEXT}  # the Secrets this test stands in for
    for item in step["env"]:
        if "valueFrom" in item:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["name"]]
            continue
        env[item["name"]] = remap.get(str(item["value"]), str(item["value"]))
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.timeout(300)
def test_the_seed_job_publishes_to_the_real_catalog_topic_and_a_rerun_writes_nothing(
        helm: Path, shop_with_segments: Path, tmp_path: Path, endpoints: Endpoints, unique: str) -> None:
    topic = f"helm-catalog-{unique}"
    rendered = helm_template(helm, set_values={
        "kafka.bootstrapServers": endpoints.kafka_bootstrap_servers.replace(",", "\\,"),
        "catalog.seedJob.enabled": "true", "catalog.source": "kafka", "catalog.topic": topic,
        "catalog.signing.secretName": "catalog-signing", "logFormat": "console",
    }, set_files=journeys_set_files(shop_with_segments, sources=True, audiences=True, topics=True))
    job = _job(rendered)
    journeys = write_files(pod_files(rendered, job["spec"]["template"]["spec"], "/etc/eventflow/journeys"),
                           tmp_path / "journeys")
    remap = {"/etc/eventflow/journeys": str(journeys), "/tmp/eventflow": str(tmp_path / "cache")}
    published = {"journeys": SHOP_JOURNEYS, "segments": SHOP_SEGMENTS}

    for run, outcome in ((1, "published"), (2, "unchanged")):
        for step in _steps(job):  # in order; a failed step fails the Job (restartPolicy Never)
            argv = [remap.get(arg, arg) for arg in step["args"]]
            result = _run(argv, _step_env(step, remap), tmp_path)
            assert result.returncode == 0, f"run {run}, {step['name']}: {result.stdout}{result.stderr}"
            assert _results(result.stdout) == {(outcome, name) for name in published[argv[0]]}, result.stdout

    tools = load_tools(_step_env(_steps(job)[-1], remap))
    writer = CatalogWriter(tools.core.kafka.client_config(), topic, keys=tools.catalog.trust())
    catalog, segments = writer.read(), writer.read_segments()
    assert set(catalog.journey_ids) == SHOP_JOURNEYS
    assert {segment.id for segment in segments.segments()} == SHOP_SEGMENTS
    written = [(e.author, e.version, e.summary) for j in SHOP_JOURNEYS for e in catalog.history(j)]
    written += [(e.author, e.version, e.summary) for s in SHOP_SEGMENTS for e in segments.history(s)]
    assert len(written) == len(SHOP_JOURNEYS) + len(SHOP_SEGMENTS)
    for author, version, summary in written:
        assert author == "helm" and version == 1
        assert summary.startswith("helm install of release ef, revision 1, chart ")
