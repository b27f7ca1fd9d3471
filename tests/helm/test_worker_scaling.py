"""Workers scale with KEDA on the Temporal task queues' backlog (CPU kept as a trigger); traces go to a collector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import ALL_ON, Rendered, helm_template
from workflows.queues import CHANNELS, send_task_queue

#: The temporal trigger's metadata fields (KEDA 2.17+ scaler documentation).
TEMPORAL_FIELDS = frozenset({
    "endpoint", "endpointFromEnv", "namespace", "taskQueue", "targetQueueSize", "activationTargetQueueSize",
    "queueTypes", "workerDeploymentName", "workerDeploymentBuildId", "buildId", "selectAllActive",
    "selectUnversioned", "includeRunningWorkflowCount", "workflowTaskQueueForCount", "minConnectTimeout",
    "unsafeSsl", "tlsServerName", "enableTLS", "apiKeyFromEnv",
})
QUEUE_TYPES = frozenset({"workflow", "activity", "nexus"})


@pytest.fixture(scope="module")
def keda_on(helm: Path) -> Rendered:
    return helm_template(helm, set_values={"worker.keda.enabled": "true"})


@pytest.fixture(scope="module")
def all_on(helm: Path) -> Rendered:
    return helm_template(helm, values_files=[ALL_ON])


def _temporal_triggers(rendered: Rendered) -> list[dict[str, Any]]:
    scaled = rendered.one("ScaledObject", "-worker")
    return [t for t in scaled["spec"]["triggers"] if t["type"] == "temporal"]


def test_the_worker_scaled_object_has_a_backlog_trigger_per_queue_the_worker_polls(keda_on: Rendered) -> None:
    scaled = keda_on.one("ScaledObject", "-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == keda_on.deployment("worker")["metadata"]["name"]
    assert "replicas" not in keda_on.deployment("worker")["spec"], "KEDA owns the worker's replica count"
    assert [h for h in keda_on.of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-worker")] == []
    queue = keda_on.env("worker")["EVENTFLOW_TASK_QUEUE"]["value"]
    triggers = _temporal_triggers(keda_on)
    by_queue = {t["metadata"]["taskQueue"]: t["metadata"] for t in triggers}
    assert set(by_queue) == {queue, *(send_task_queue(queue, channel) for channel in CHANNELS)}
    assert by_queue[queue]["queueTypes"] == "workflow,activity"
    for metadata in by_queue.values():
        assert set(metadata) <= TEMPORAL_FIELDS, f"unknown temporal trigger fields {set(metadata) - TEMPORAL_FIELDS}"
        assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
        assert metadata["endpoint"] == keda_on.env("worker")["TEMPORAL_ADDRESS"]["value"]
        assert metadata["namespace"] == keda_on.env("worker")["TEMPORAL_NAMESPACE"]["value"]
        assert set(metadata["queueTypes"].split(",")) <= QUEUE_TYPES
        assert int(metadata["targetQueueSize"]) > 0 and int(metadata["activationTargetQueueSize"]) >= 0


def test_cpu_stays_as_the_fallback_trigger(keda_on: Rendered) -> None:
    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "helm/eventflow/values.yaml").read_text())
    [cpu] = [t for t in keda_on.one("ScaledObject", "-worker")["spec"]["triggers"] if t["type"] == "cpu"]
    assert cpu["metricType"] == "Utilization"
    assert cpu["metadata"]["value"] == str(values["worker"]["hpa"]["targetCPUUtilizationPercentage"])
    assert keda_on.container("worker")["resources"]["requests"]["cpu"], "a CPU trigger needs CPU requests"


def test_without_keda_the_cpu_hpa_scales_workers(helm: Path) -> None:
    rendered = helm_template(helm)
    rendered.one("HorizontalPodAutoscaler", "-worker")
    assert [s for s in rendered.of_kind("ScaledObject") if s["metadata"]["name"].endswith("-worker")] == []


def test_triggers_authenticate_with_the_named_trigger_authentication(all_on: Rendered) -> None:
    values = yaml.safe_load(ALL_ON.read_text())["worker"]["keda"]
    scaled = all_on.one("ScaledObject", "-worker")
    assert scaled["spec"]["maxReplicaCount"] == values["maxReplicaCount"]
    for trigger in _temporal_triggers(all_on):
        assert trigger["authenticationRef"] == {"name": values["triggerAuthenticationName"]}
        assert trigger["metadata"]["enableTLS"] == "true"


def test_tracing_is_off_by_default_and_reaches_both_processes_when_set(helm: Path, all_on: Rendered) -> None:
    default = helm_template(helm)
    for component in ("consumer", "worker"):
        assert not any(name.startswith(("EVENTFLOW_OTLP", "EVENTFLOW_TRACE")) for name in default.env(component))
        env = all_on.env(component)
        assert env["EVENTFLOW_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4318/v1/traces"
        assert env["EVENTFLOW_TRACE_SAMPLE_RATIO"]["value"] == "0.25"
        assert env["EVENTFLOW_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otlp-headers", "key": "headers"}
