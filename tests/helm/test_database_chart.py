"""The customer store in the chart: the DSN from an existing Secret, on every process that uses it, and the
migration hook Job, which really migrates a database when run with the environment it renders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventflow.settings import load_tools
from store import current_revision, required_revision
from tests.helm.chart import ALL_ON, REPO, Manifest, Rendered, RenderError, helm_template

STORE_USERS = ("consumer", "worker", "webhooks")
WEBHOOKS_ON = {"webhooks.enabled": "true", "webhooks.publicUrl": "https://hooks.example.com"}


@pytest.fixture(scope="module")
def all_on(helm: Path) -> Rendered:
    return helm_template(helm, values_files=[ALL_ON])


def _migrate_job(rendered: Rendered) -> Manifest:
    return rendered.one("Job", "-db-migrate")


def _job_env(job: Manifest) -> dict[str, Manifest]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def _pod(manifest: Manifest) -> Manifest:
    pod: Manifest = manifest["spec"]["template"]["spec"]
    return pod


def _database_volumes(pod: Manifest) -> dict[str, Manifest]:
    return {v["name"]: v for v in pod["volumes"] if v["name"].startswith("database")}


def _mounts(pod: Manifest) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}


def test_every_process_that_uses_the_store_reads_the_dsn_from_the_existing_secret(all_on: Rendered) -> None:
    for component in STORE_USERS:
        env = all_on.env(component)
        assert env["EVENTFLOW_DATABASE_URL_FILE"] == {"name": "EVENTFLOW_DATABASE_URL_FILE",
                                                      "value": "/etc/eventflow/database/url"}, component
        assert "EVENTFLOW_DATABASE_URL" not in env, f"{component}: the DSN holds a password, never a plain value"
        assert env["EVENTFLOW_DATABASE_POOL_MAX_SIZE"]["value"] == "20"
        assert env["EVENTFLOW_DATABASE_POOL_MIN_SIZE"]["value"] == "1"
        assert env["EVENTFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS"]["value"] == "2.5"
        assert env["PGSSLMODE"]["value"] == "verify-full"
        assert env["PGSSLROOTCERT"]["value"] == "/etc/eventflow/database-tls/ca.crt"
        pod = _pod(all_on.deployment(component))
        assert _mounts(pod)["database"] == "/etc/eventflow/database"
        assert _mounts(pod)["database-tls"] == "/etc/eventflow/database-tls"
        volumes = _database_volumes(pod)
        # Only the DSN's key, renamed to the file the variable names: an operator's Secret holds more.
        assert volumes["database"]["secret"] == {"secretName": "eventflow-db", "defaultMode": 0o440,
                                                 "items": [{"key": "uri", "path": "url"}]}
        assert volumes["database-tls"]["secret"]["secretName"] == "eventflow-db-ca"
        assert volumes["database-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    codec = _pod(all_on.deployment("codec-server"))
    assert not _database_volumes(codec), "the codec server has no use for the store"
    assert all_on.of_kind("Secret") == [], "the chart must not create Secrets"


def test_a_hook_job_migrates_the_store_before_install_and_upgrade(all_on: Rendered) -> None:
    job = _migrate_job(all_on)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = _pod(job)
    [container] = pod["containers"]
    assert container["command"] == ["eventflow"] and container["args"] == ["db", "migrate"]
    assert container["image"] == all_on.container("worker")["image"]
    env = _job_env(job)
    worker = all_on.env("worker")
    for name in ("EVENTFLOW_DATABASE_URL_FILE", "PGSSLMODE", "PGSSLROOTCERT"):
        assert env[name] == worker[name], f"the Job reaches the database as the processes do ({name})"
    assert not [name for name in env if name.startswith(("KAFKA_", "TEMPORAL_"))], "it needs the database only"
    assert _database_volumes(pod) == _database_volumes(_pod(all_on.deployment("worker")))
    assert _mounts(pod)["database"] == "/etc/eventflow/database"
    # A pre-install hook runs before the chart's ServiceAccount exists.
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_without_a_secret_there_is_no_store_no_job_and_no_mount(helm: Path) -> None:
    rendered = helm_template(helm, set_values=WEBHOOKS_ON)
    assert not [job for job in rendered.of_kind("Job") if job["metadata"]["name"].endswith("-db-migrate")]
    for component in STORE_USERS:
        assert not [name for name in rendered.env(component) if "DATABASE" in name or name.startswith("PG")]
        assert not _database_volumes(_pod(rendered.deployment(component)))


def test_connect_processes_false_mounts_the_secret_but_leaves_processes_on_workflow_state(helm: Path) -> None:
    # The first step of "Upgrading to the customer store": the schema is migrated and the DSN is at hand for
    # `eventflow db import --keep`, while the processes keep customer state in Temporal.
    rendered = helm_template(helm, set_values={**WEBHOOKS_ON, "database.existingSecret": "eventflow-db",
                                               "database.connectProcesses": "false"})
    for component in STORE_USERS:
        assert "EVENTFLOW_DATABASE_URL_FILE" not in rendered.env(component)
        assert _mounts(_pod(rendered.deployment(component)))["database"] == "/etc/eventflow/database"
    assert _job_env(_migrate_job(rendered))["EVENTFLOW_DATABASE_URL_FILE"]["value"] == "/etc/eventflow/database/url"


def test_with_connect_processes_false_an_exec_naming_the_mounted_file_reaches_the_store(helm: Path,
                                                                                       tmp_path: Path) -> None:
    # docs/deploy.md, step 3: `kubectl exec deploy/eventflow-worker -- env EVENTFLOW_DATABASE_URL_FILE=... eventflow
    # db import --keep`. The worker's own environment plus that one variable must name the store.
    rendered = helm_template(helm, set_values={"database.existingSecret": "eventflow-db",
                                               "database.connectProcesses": "false"})
    dsn = "postgresql://eventflow:secret@db.example.com:5432/eventflow?sslmode=verify-full"
    (tmp_path / "url").write_text(dsn + "\n")
    env = {name: str(item["value"]) for name, item in rendered.env("worker").items()}
    assert load_tools(env).database.dsn() is None, "the worker itself does not use the store"
    env["EVENTFLOW_DATABASE_URL_FILE"] = str(tmp_path / "url")
    assert load_tools(env).database.dsn() == dsn


def test_the_migration_job_can_be_turned_off(helm: Path) -> None:
    rendered = helm_template(helm, set_values={"database.existingSecret": "eventflow-db",
                                               "database.migrateJob.enabled": "false"})
    assert [job["metadata"]["name"] for job in rendered.of_kind("Job")] == ["ef-eventflow-temporal-setup"]
    assert rendered.env("worker")["EVENTFLOW_DATABASE_URL_FILE"]


def test_the_schema_refuses_an_unknown_sslmode(helm: Path) -> None:
    with pytest.raises(RenderError, match="sslMode"):
        helm_template(helm, set_values={"database.existingSecret": "eventflow-db", "database.tls.sslMode": "on"})


@pytest.mark.timeout(120)
async def test_the_rendered_job_migrates_a_fresh_database(helm: Path, fresh_database_url: str,
                                                          tmp_path: Path) -> None:
    # The Job's container, run as a process: exactly its environment, the Secret's file in a stand-in folder.
    rendered = helm_template(helm, set_values={"database.existingSecret": "eventflow-db",
                                               "database.tls.sslMode": "disable"})
    job = _migrate_job(rendered)
    [container] = _pod(job)["containers"]
    secret = tmp_path / "database"
    secret.mkdir()
    (secret / "url").write_text(fresh_database_url + "\n")
    remap = {"/etc/eventflow/database/url": str(secret / "url"), "/tmp/eventflow": str(tmp_path / "cache")}
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    for item in container["env"]:
        env[item["name"]] = remap.get(str(item["value"]), str(item["value"]))
    env["PYTHONPATH"] = str(REPO)
    assert await current_revision(fresh_database_url) is None

    result = subprocess.run([sys.executable, "-m", "eventflow.cli", *container["args"]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=90, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert await current_revision(fresh_database_url) == required_revision()
