"""The chart as code: lint, render, and check what the rendered manifests promise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import ChannelSettings
from core.vocabulary import CHANNELS
from helm import values_table
from journeys.loader import load_all
from tests.helm.chart import ALL_ON, CHART, REPO, TRIAL, Rendered, RenderError, helm_template, journeys_set_files

COMPONENTS = ("consumer", "worker")
_SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|API_KEY|SECRET|USERNAME)")


@pytest.fixture(scope="module")
def default(helm: Path) -> Rendered:
    return helm_template(helm)


@pytest.fixture(scope="module")
def all_on(helm: Path) -> Rendered:
    return helm_template(helm, values_files=[ALL_ON])


@pytest.mark.parametrize("values", [TRIAL, ALL_ON], ids=["trial", "all-on"])
def test_lint_strict_passes(helm: Path, values: Path) -> None:
    argv = [str(helm), "lint", "--strict", str(CHART), "-f", str(values)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("which", ["default", "all_on"])
def test_both_deployments_run_their_command_with_probes_and_a_locked_down_security_context(
        which: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    for component, command in zip(COMPONENTS, ("consume", "worker"), strict=True):
        pod = rendered.deployment(component)["spec"]["template"]["spec"]
        container = rendered.container(component)
        assert container["command"] == ["eventflow"] and container["args"] == [command]

        port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
        assert rendered.env(component)["EVENTFLOW_METRICS_PORT"]["value"] == str(port)
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}

        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        # A read-only root needs a writable /tmp for the cache dir.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert rendered.env(component)["EVENTFLOW_CACHE_DIR"]["value"].startswith("/tmp/")

        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert pod["topologySpreadConstraints"], f"{component} pods are not spread"
        assert pod["terminationGracePeriodSeconds"] > 0


def test_default_spread_selects_the_components_own_pods(default: Rendered) -> None:
    for component in COMPONENTS:
        pod_labels = default.deployment(component)["spec"]["template"]["metadata"]["labels"]
        constraints = default.deployment(component)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
            assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


def test_every_secret_is_a_reference_to_an_existing_secret(all_on: Rendered) -> None:
    secret_vars = 0
    for component in COMPONENTS:
        for name, item in all_on.env(component).items():
            if _SECRET_NAME.search(name):
                secret_vars += 1
                assert "value" not in item, f"{component}: {name} is plain text"
                assert item["valueFrom"]["secretKeyRef"]["name"]
        volumes = {v["name"]: v for v in all_on.deployment(component)["spec"]["template"]["spec"]["volumes"]}
        assert volumes["temporal-tls"]["secret"]["secretName"] == "temporal-mtls"
        env = all_on.env(component)
        assert env["TEMPORAL_TLS_CERT"]["value"].startswith("/etc/eventflow/temporal-tls/")
    # On both: Kafka SASL user and password, the Temporal API key, the registry user and password;
    # on the worker: SendGrid, Twilio and the SMTP user and password.
    assert secret_vars == 2 * 5 + 4
    assert all_on.of_kind("Secret") == [], "the chart must not create Secrets"


def test_a_password_in_plain_kafka_config_is_refused(helm: Path) -> None:
    with pytest.raises(RenderError, match="looks like a secret"):
        helm_template(helm, set_values={"kafka.config.sasl\\.password": "hunter2"})


def test_values_reach_the_settings_they_document(all_on: Rendered) -> None:
    consumer, worker = all_on.env("consumer"), all_on.env("worker")
    assert consumer["EVENTFLOW_TOPICS"]["value"] == "customer-events,partner-events"
    assert consumer["EVENTFLOW_TOPIC_ENCODINGS"]["value"] == "customer-events=registry,partner-events=embedded"
    assert consumer["EVENTFLOW_SCHEMA_REGISTRY_URL"]["value"] == "https://registry.example.com"
    assert consumer["EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert consumer["EVENTFLOW_MAX_IN_FLIGHT"]["value"] == "512"
    assert worker["EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES"]["value"] == "200"
    assert worker["TEMPORAL_NAMESPACE"]["value"] == "eventflow.a1b2c"


def test_provider_secrets_reach_the_worker_only(all_on: Rendered) -> None:
    # Only the worker sends, so only its pods get the providers' secrets and addresses; the consumer
    # gets the providers' names of every channel (it refuses catalog journeys on a channel none
    # serves, so a push journey would be refused if it lacked the push providers' names).
    assert all_on.env("worker")["EVENTFLOW_EMAIL_PROVIDER"]["value"] == "sendgrid"
    consumer = all_on.env("consumer")
    assert {name for name in consumer if "PROVIDER" in name} - {"EVENTFLOW_EMAIL_PROVIDERS"} == {
        ChannelSettings.variable(f"{channel}_provider") for channel in CHANNELS}
    assert (consumer["EVENTFLOW_PUSH_PROVIDER"]["value"], consumer["EVENTFLOW_WEBPUSH_PROVIDER"]["value"]) == (
        "fcm", "webpush")
    assert not any("SENDGRID" in name or "TWILIO" in name or name.endswith("_FROM") for name in consumer)


@pytest.mark.parametrize("component", ["consumer", "worker"])
def test_every_rendered_variable_is_a_setting_with_a_valid_value(
        all_on: Rendered, component: str) -> None:
    # A fresh interpreter imports only the settings layer (settings come from classes, not from
    # whatever the process imported), then checks each plain value with its field's own type. A
    # process accepts a setting another process reads (the chart shares one ConfigMap), so the
    # rule is "some Eventflow process reads it".
    plain = {name: str(item["value"]) for name, item in all_on.env(component).items() if "value" in item}
    secret = [name for name, item in all_on.env(component).items() if "value" not in item]
    script = """
import json, sys
from eventflow import settings
from core.errors import ConfigError
plain, secret = json.loads(sys.argv[1]), json.loads(sys.argv[2])
read = settings.variables()
for name in [*plain, *secret]:
    # Pass-through: librdkafka's settings and libpq's TLS variables (asyncpg reads them); TZ from extraEnv.
    if name.startswith(("EVENTFLOW_LIBRDKAFKA_", "PGSSL")) or name == "TZ":
        continue
    if name not in read:
        print(f"{name}: not an Eventflow setting")
    elif name in plain:
        try:
            settings.check_value(name, plain[name])
        except ConfigError as exc:
            print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script, json.dumps(plain), json.dumps(secret)], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert result.stdout == "", f"{component}:\n{result.stdout}"


def test_journeys_ship_as_config_maps_the_loader_accepts(helm: Path, tmp_path: Path) -> None:
    rendered = helm_template(helm, set_files=journeys_set_files())
    folders = {"definitions": tmp_path / "definitions", "templates": tmp_path / "templates"}
    for kind, folder in folders.items():
        folder.mkdir()
        for name, text in rendered.one("ConfigMap", f"-journey-{kind}")["data"].items():
            (folder / name).write_text(text)
    assert sorted(p.name for p in folders["definitions"].iterdir()) == sorted(
        p.name for p in (REPO / "journeys" / "definitions").glob("*.yaml"))
    loaded = load_all(tmp_path)
    assert {d.id for d in loaded} == {d.id for d in load_all(REPO / "journeys")}

    for component in COMPONENTS:
        pod = rendered.deployment(component)["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["journey-definitions"] == "/etc/eventflow/journeys/definitions"
        assert mounts["journey-templates"] == "/etc/eventflow/journeys/templates"
        assert rendered.env(component)["EVENTFLOW_JOURNEYS_DIR"]["value"] == "/etc/eventflow/journeys"


def test_changing_a_template_changes_the_checksum_that_rolls_the_pods(helm: Path, tmp_path: Path) -> None:
    files = journeys_set_files()
    before = helm_template(helm, set_files=files)
    edited = tmp_path / "purchase_thank_you.yaml"
    edited.write_text(files["journeys.templates.purchase_thank_you"].read_text().replace("Thank", "Many thanks"))
    after = helm_template(helm, set_files={**files, "journeys.templates.purchase_thank_you": edited})
    again = helm_template(helm, set_files=files)

    for component in COMPONENTS:
        def checksum(rendered: Rendered, component: str = component) -> str:
            annotations = rendered.deployment(component)["spec"]["template"]["metadata"]["annotations"]
            return str(annotations["checksum/journeys"])

        assert re.fullmatch(r"[0-9a-f]{64}", checksum(before))
        assert checksum(after) != checksum(before)
        assert checksum(again) == checksum(before)


def test_external_journey_config_maps_are_mounted_by_name(helm: Path) -> None:
    rendered = helm_template(helm, set_values={"journeys.existingDefinitionsConfigMap": "my-defs",
                                               "journeys.existingTemplatesConfigMap": "my-templates"})
    assert not [m for m in rendered.of_kind("ConfigMap") if "journey" in m["metadata"]["name"]]
    volumes = {v["name"]: v for v in rendered.deployment("worker")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["journey-definitions"]["configMap"]["name"] == "my-defs"
    assert volumes["journey-templates"]["configMap"]["name"] == "my-templates"
    # helm template cannot see the cluster: the checksum covers the names; `helm upgrade` the content.
    annotations = rendered.deployment("worker")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/journeys"])
    with pytest.raises(RenderError, match="both definitions and templates"):
        helm_template(helm, set_values={"journeys.existingDefinitionsConfigMap": "my-defs"})


def test_default_scaling_hpa_for_workers_fixed_consumers_and_pdbs(default: Rendered) -> None:
    hpa = default.one("HorizontalPodAutoscaler", "-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == default.deployment("worker")["metadata"]["name"]
    assert "replicas" not in default.deployment("worker")["spec"], "the HPA owns the worker's replica count"
    assert default.deployment("consumer")["spec"]["replicas"] == 2
    assert default.of_kind("ScaledObject") == []
    for component in COMPONENTS:
        pdb = default.one("PodDisruptionBudget", f"-{component}")
        pod_labels = default.deployment(component)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1


def test_keda_scales_consumers_on_lag_capped_at_the_partition_count(all_on: Rendered) -> None:
    values = yaml.safe_load(ALL_ON.read_text())
    scaled = all_on.one("ScaledObject", "-consumer")
    assert values["consumer"]["keda"]["maxReplicaCount"] > values["kafka"]["partitions"]
    assert scaled["spec"]["maxReplicaCount"] == values["kafka"]["partitions"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == all_on.deployment("consumer")["metadata"]["name"]
    assert "replicas" not in all_on.deployment("consumer")["spec"], "KEDA owns the consumer's replica count"
    triggers = scaled["spec"]["triggers"]
    assert [t["metadata"]["topic"] for t in triggers] == values["kafka"]["topics"]
    for trigger in triggers:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == values["kafka"]["consumerGroup"]
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert trigger["authenticationRef"]["name"] == "eventflow-kafka"


def test_keda_without_a_max_uses_the_partition_count(helm: Path) -> None:
    rendered = helm_template(helm, set_values={"consumer.keda.enabled": "true", "kafka.partitions": "6"})
    assert rendered.one("ScaledObject")["spec"]["maxReplicaCount"] == 6


def test_pod_monitor_scrapes_the_metrics_port_of_both_components(all_on: Rendered) -> None:
    monitor = all_on.one("PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    for component in COMPONENTS:
        pod_labels = all_on.deployment(component)["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_dashboard_ships_for_the_grafana_sidecar_with_the_required_panels(all_on: Rendered) -> None:
    config_map = all_on.one("ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(config_map["data"]["eventflow.json"])
    assert board["uid"] == "eventflow-overview"
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for needle in ("eventflow_events_consumed_total", "by (event_type, outcome)", "eventflow_consumer_lag_messages",
                   "eventflow_workflow_starts_total", "eventflow_workflow_signals_total",
                   "eventflow_workflow_dedupes_total", "eventflow_dead_letters_total",
                   "eventflow_notifications_sent_total", "by (channel, outcome)",
                   "eventflow_event_processing_seconds_bucket", "eventflow_notification_send_seconds_bucket",
                   "eventflow_db_statement_seconds_bucket", "by (kind, le)", "eventflow_db_pool_connections",
                   "eventflow_db_errors_total", "eventflow_provider_circuit_state", "eventflow_send_failovers_total",
                   "by (channel, provider)", "eventflow_broadcast_recipients_total",
                   "eventflow_whatsapp_inbound_messages_total", "eventflow_inbound_keywords_total"):
        assert needle in exprs, f"the dashboard has no panel reading {needle}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_rules_cover_every_alert(all_on: Rendered) -> None:
    rules = all_on.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "EventflowConsumerLagGrowing", "EventflowDeadLettersArriving", "EventflowSendFailureRatioHigh",
        "EventflowWorkflowTaskFailures", "EventflowNoEventsConsumed", "EventflowTaskQueueBacklogOld",
        "EventflowWebhooksRefusing", "EventflowDatabasePoolExhausted", "EventflowDatabaseSlowStatements",
        "EventflowUncertainSendsUnresolved"}
    for rule in rules:
        assert rule["labels"]["team"] == "growth"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_values_schema_is_current_and_refuses_typos_and_bad_choices(helm: Path) -> None:
    assert (CHART / "values.schema.json").read_text() == values_table.schema(), (
        "helm/eventflow/values.schema.json is stale: run `python helm/values_table.py`")
    with pytest.raises(RenderError, match="additional properties 'enable' not allowed"):
        helm_template(helm, set_values={"consumer.keda.enable": "true"})
    with pytest.raises(RenderError, match="logFormat"):
        helm_template(helm, set_values={"logFormat": "xml"})
    with pytest.raises(RenderError, match="provider"):
        helm_template(helm, set_values={"providers.email.provider": "mailgun"})


def test_readme_lists_every_value_with_its_default() -> None:
    assert values_table.readme_table() == values_table.table(), (
        "helm/eventflow/README.md is stale: run `python helm/values_table.py`")
    rows = values_table.table().splitlines()[2:]
    assert any(row.startswith("| `kafka.partitions` | `12` |") for row in rows)
    assert len(rows) > 80


def test_providers_must_be_chosen_and_dev_mode_is_explicit(helm: Path) -> None:
    with pytest.raises(RenderError, match="providers.email.provider is required"):
        helm_template(helm, values_files=())
    with pytest.raises(RenderError, match="providers.sms.provider is required"):
        helm_template(helm, values_files=(), set_values={"providers.email.provider": "outbox"})
    production = helm_template(helm, values_files=[ALL_ON]).env("worker")
    assert production["EVENTFLOW_EMAIL_PROVIDER"]["value"] == "sendgrid"
    assert "EVENTFLOW_DEV_MODE" not in production
    trial = helm_template(helm).env("worker")
    assert trial["EVENTFLOW_EMAIL_PROVIDER"]["value"] == "outbox"
    assert trial["EVENTFLOW_DEV_MODE"]["value"] == "true"
    # The consumer refuses catalog journeys on a channel no provider serves: it reads the names too.
    consumer = helm_template(helm, values_files=[ALL_ON]).env("consumer")
    assert consumer["EVENTFLOW_EMAIL_PROVIDER"]["value"] == "sendgrid" and "EVENTFLOW_DEV_MODE" not in consumer
    assert helm_template(helm).env("consumer")["EVENTFLOW_DEV_MODE"]["value"] == "true"
    assert not {"SENDGRID_API_KEY", "TWILIO_AUTH_TOKEN"} & set(consumer), "no provider secret in the consumer"


def test_email_failover_and_smtp_reach_the_worker_with_credentials_as_secret_references(
        all_on: Rendered, helm: Path) -> None:
    worker = all_on.env("worker")
    assert {name: worker[name]["value"] for name in ("EVENTFLOW_EMAIL_PROVIDER", "EVENTFLOW_EMAIL_PROVIDERS",
                                                     "EVENTFLOW_SMTP_HOST", "EVENTFLOW_SMTP_PORT",
                                                     "EVENTFLOW_SMTP_SECURITY")} == {
        "EVENTFLOW_EMAIL_PROVIDER": "sendgrid", "EVENTFLOW_EMAIL_PROVIDERS": "sendgrid,smtp",
        "EVENTFLOW_SMTP_HOST": "smtp.example.com", "EVENTFLOW_SMTP_PORT": "465", "EVENTFLOW_SMTP_SECURITY": "tls"}
    assert [worker[name]["valueFrom"]["secretKeyRef"] for name in ("EVENTFLOW_SMTP_USERNAME", "EVENTFLOW_SMTP_PASSWORD")] \
        == [{"name": "smtp-relay", "key": "username"}, {"name": "smtp-relay", "key": "password"}]
    assert worker["SENDGRID_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "sendgrid"

    # SMTP alone: no SendGrid key asked for, no AUTH without a Secret, the port's default.
    alone = helm_template(helm, values_files=[ALL_ON], set_values={
        "providers.email.provider": "smtp", "providers.email.providers": "null",
        "providers.smtp.credentials.secretName": "", "providers.smtp.port": "587"}).env("worker")
    assert alone["EVENTFLOW_EMAIL_PROVIDER"]["value"] == "smtp"
    assert not {"EVENTFLOW_EMAIL_PROVIDERS", "SENDGRID_API_KEY", "EVENTFLOW_SMTP_USERNAME",
                "EVENTFLOW_SMTP_PASSWORD"} & set(alone)
    assert alone["EVENTFLOW_SMTP_PORT"]["value"] == "587"


def test_the_circuit_breaker_and_provider_timeout_reach_the_worker(all_on: Rendered, helm: Path) -> None:
    # What decides that a provider is unavailable (its timeout, the breaker's threshold and open time)
    # is the chart's to set: the defaults are the settings' own, and only the worker reads them.
    failover = {ChannelSettings.variable(name): float(ChannelSettings.model_fields[name].default)
                for name in ("provider_circuit_failures", "provider_circuit_open_seconds", "provider_timeout_seconds")}
    worker = all_on.env("worker")
    assert {name: float(worker[name]["value"]) for name in failover} == failover
    assert not set(failover) & set(all_on.env("consumer"))
    tuned = helm_template(helm, values_files=[ALL_ON], set_values={
        "providers.circuitBreaker.failures": "3", "providers.circuitBreaker.openSeconds": "90",
        "providers.timeoutSeconds": "4"}).env("worker")
    assert [tuned[name]["value"] for name in failover] == ["3", "90", "4"]


@pytest.mark.parametrize(("values", "message"), [
    ({"providers.circuitBreaker.failures": "0"}, "failures"),
    ({"providers.circuitBreaker.openSeconds": "0"}, "openSeconds"),
    ({"providers.timeoutSeconds": "0"}, "timeoutSeconds"),
])
def test_circuit_breaker_values_that_cannot_work_are_refused(helm: Path, values: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        helm_template(helm, values_files=[ALL_ON], set_values=values)


@pytest.mark.parametrize(("values", "message"), [
    ({"providers.email.provider": "smtp"}, "must be the first of providers.email.providers"),
    ({"providers.smtp.host": ""}, "providers.smtp.host is required when email uses smtp"),
    ({"database.existingSecret": ""}, "failover needs the customer store"),
    ({"database.connectProcesses": "false"}, "failover needs the customer store"),
    ({"providers.email.providers": "{sendgrid,mailgun}"}, "providers"),
    ({"providers.smtp.security": "ssl"}, "security"),
])
def test_email_failover_and_smtp_values_that_cannot_work_are_refused(
        helm: Path, values: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        helm_template(helm, values_files=[ALL_ON], set_values=values)


def test_a_hook_job_registers_the_search_attributes_before_install_and_upgrade(helm: Path) -> None:
    rendered = helm_template(helm, values_files=[ALL_ON])
    [job] = [m for m in rendered.of_kind("Job") if m["metadata"]["name"].endswith("temporal-setup")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["eventflow"] and container["args"] == ["temporal", "setup"]
    env = {item["name"]: item for item in container["env"]}
    worker_env = rendered.env("worker")
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS_CA", "TEMPORAL_TLS_CERT"):
        assert env[name] == worker_env[name], f"the Job reaches Temporal as the worker does ({name})"
    assert not [name for name in env if name.startswith("EVENTFLOW_") and name != "EVENTFLOW_LOG_FORMAT"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    off = helm_template(helm, set_values={"temporal.setupJob.enabled": "false"})
    assert not off.of_kind("Job")


def test_an_image_digest_pins_every_pod_to_that_image(helm: Path) -> None:
    digest = "sha256:" + "ab" * 32
    rendered = helm_template(helm, set_values={"image.digest": digest, "image.tag": "0.1.0"})
    for component in COMPONENTS:
        assert rendered.container(component)["image"] == f"ghcr.io/eventflow/eventflow@{digest}"
    [job] = rendered.of_kind("Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/eventflow/eventflow@{digest}"
    assert helm_template(helm).container("worker")["image"].startswith("ghcr.io/eventflow/eventflow:")


def test_webhooks_deployment_serves_the_webhook_port_behind_a_service_and_only_its_paths_publicly(
        all_on: Rendered, default: Rendered) -> None:
    assert [m for m in default.of_kind("Deployment") if m["metadata"]["name"].endswith("-webhooks")] == []
    container = all_on.container("webhooks")
    assert container["args"] == ["webhooks"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = all_on.env("webhooks")
    assert str(ports["http"]) == env["EVENTFLOW_WEBHOOKS_PORT"]["value"] and "metrics" in ports
    assert env["EVENTFLOW_WEBHOOKS_PUBLIC_URL"]["value"] == "https://hooks.example.com"
    # The worker asks Twilio for status callbacks at the same URL the receiver checks signatures with.
    assert all_on.env("worker")["EVENTFLOW_WEBHOOKS_PUBLIC_URL"] == env["EVENTFLOW_WEBHOOKS_PUBLIC_URL"]
    for name in ("SENDGRID_WEBHOOK_VERIFICATION_KEY", "TWILIO_AUTH_TOKEN"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]
    pod_labels = all_on.deployment("webhooks")["spec"]["template"]["metadata"]["labels"]
    service = all_on.one("Service", "-webhooks")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    ingress = all_on.one("Ingress", "-webhooks")
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    assert sorted(p["path"] for p in rule["http"]["paths"]) == ["/sendgrid/events", "/twilio/inbound",
                                                                 "/twilio/status"]
    assert {p["backend"]["service"]["name"] for p in rule["http"]["paths"]} == {service["metadata"]["name"]}
    pdb = all_on.one("PodDisruptionBudget", "-webhooks")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = all_on.one("PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_webhooks_need_a_public_url(helm: Path) -> None:
    with pytest.raises(RenderError, match="webhooks.publicUrl is required"):
        helm_template(helm, set_values={"webhooks.enabled": "true"})


def test_every_rendered_webhooks_variable_is_a_setting(all_on: Rendered) -> None:
    from eventflow import settings

    for name, item in all_on.env("webhooks").items():
        if name.startswith(("EVENTFLOW_LIBRDKAFKA_", "PGSSL")) or name == "TZ":
            continue
        assert name in settings.variables(), name
        if "value" in item:
            settings.check_value(name, str(item["value"]))


def test_push_keys_and_device_api_tokens_are_mounted_secret_files_where_their_settings_read_them(
        all_on: Rendered, default: Rendered) -> None:
    def files(rendered: Rendered, component: str) -> dict[str, str]:
        """Each mounted Secret key, by the file path the container sees, -> the Secret's name."""
        pod = rendered.deployment(component)["spec"]["template"]["spec"]
        volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        found = {}
        for mount in rendered.container(component)["volumeMounts"]:
            secret = volumes.get(mount["name"], {})
            assert mount["name"] not in volumes or mount.get("readOnly"), mount
            for item in secret.get("items", []):
                found[f"{mount['mountPath']}/{item['path']}"] = secret["secretName"]
        return found

    worker, webhooks = all_on.env("worker"), all_on.env("webhooks")
    worker_files, webhook_files = files(all_on, "worker"), files(all_on, "webhooks")
    assert (worker["EVENTFLOW_PUSH_PROVIDER"]["value"], worker["EVENTFLOW_WEBPUSH_PROVIDER"]["value"]) == ("fcm", "webpush")
    assert worker_files[worker["EVENTFLOW_FCM_SERVICE_ACCOUNT_FILE"]["value"]] == "fcm-service-account"
    assert worker_files[worker["EVENTFLOW_VAPID_PRIVATE_KEY_FILE"]["value"]] == "vapid"
    assert worker["EVENTFLOW_VAPID_SUBJECT"]["value"] == "mailto:ops@example.com"
    assert webhook_files[webhooks["EVENTFLOW_DEVICE_API_TOKENS_FILE"]["value"]] == "device-api-tokens"
    # Each process gets only its own: no push key in the webhooks or consumer, no token in the worker.
    assert "device-api-tokens" not in worker_files.values()
    assert not {"fcm-service-account", "vapid"} & {*webhook_files.values(), *files(all_on, "consumer").values()}
    trial = default.env("worker")
    assert trial["EVENTFLOW_PUSH_PROVIDER"]["value"] == "outbox" and "EVENTFLOW_VAPID_PRIVATE_KEY_FILE" not in trial


@pytest.mark.parametrize(("set_values", "message"), [
    ({"providers.push.provider": "fcm"}, "providers.fcm.serviceAccount.secretName is required"),
    ({"providers.webpush.provider": "webpush"}, "providers.vapid.privateKey.secretName is required"),
    ({"providers.webpush.provider": "webpush", "providers.vapid.privateKey.secretName": "vapid"},
     "providers.vapid.subject is required"),
])
def test_a_push_provider_without_its_secret_does_not_render(helm: Path, set_values: dict[str, str],
                                                            message: str) -> None:
    with pytest.raises(RenderError, match=message):
        helm_template(helm, set_values=set_values)
