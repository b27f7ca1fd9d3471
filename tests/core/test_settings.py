"""Settings are validated once, fail naming the variable, and the README table is generated from them."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import get_args

import pytest

from core.errors import ConfigError
from core.settings import (
    DatabaseSettings,
    Encoding,
    Process,
    SendGridSettings,
    SubjectStrategy,
    TemporalSettings,
    TwilioSettings,
)
from eventflow.settings import (
    load_consumer,
    load_settings,
    load_tools,
    load_webhooks,
    load_worker,
    markdown_table,
    variables,
)


def test_defaults_point_at_the_dev_stack() -> None:
    settings = load_settings({})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.kafka.topics == ("customer-events",)


@pytest.mark.parametrize(("variable", "value"), [
    ("EVENTFLOW_MAX_IN_FLIGHT", "0"),
    ("EVENTFLOW_MAX_IN_FLIGHT", "many"),
    ("EVENTFLOW_METRICS_PORT", "70000"),
    ("EVENTFLOW_LOG_FORMAT", "xml"),
    ("EVENTFLOW_TOPICS", " , "),
    ("TEMPORAL_TLS_CA", "/does/not/exist.pem"),
])
def test_an_invalid_value_fails_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value)


def test_consumer_worker_and_webhooks_bind_different_ports_by_default() -> None:
    consumer, worker, webhooks = load_consumer({}), load_worker({}), load_webhooks({})
    taken = [consumer.core.metrics_port, worker.ops.metrics_port, worker.worker.temporal_metrics_port,
             webhooks.ops.metrics_port, webhooks.webhooks.port]
    assert len(set(taken)) == len(taken), taken
    assert (consumer.core.metrics_port, worker.ops.metrics_port, webhooks.ops.metrics_port) == (9464, 9466, 9467)


def test_a_set_metrics_port_is_every_process_s_port() -> None:
    environ = {"EVENTFLOW_METRICS_PORT": "9100"}
    assert load_consumer(environ).core.metrics_port == 9100
    assert load_worker(environ).ops.metrics_port == 9100
    assert load_webhooks(environ).ops.metrics_port == 9100


def test_an_unknown_eventflow_variable_is_an_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"EVENTFLOW_MAX_INFLIGHT": "10"})
    assert raised.value.variable == "EVENTFLOW_MAX_INFLIGHT"


def test_the_store_defaults_to_the_dev_stack_and_checks_its_bounds() -> None:
    store = load_tools({}).database
    assert store.dsn() == "postgresql://eventflow:eventflow@127.0.0.1:15432/eventflow"
    assert DatabaseSettings.load({}).dsn() is None, "without the dev defaults there is no store"
    for environ, variable in (({"EVENTFLOW_DATABASE_URL": "mysql://u:hunter2@h/db"}, "EVENTFLOW_DATABASE_URL"),
                              ({"EVENTFLOW_DATABASE_POOL_MIN_SIZE": "11"}, "EVENTFLOW_DATABASE_POOL_MIN_SIZE")):
        with pytest.raises(ConfigError) as raised:
            DatabaseSettings.load(environ)
        assert raised.value.variable == variable and "hunter2" not in str(raised.value)


def test_mtls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError) as raised:
        load_settings({"TEMPORAL_TLS_CERT": str(cert)})
    assert raised.value.variable == "TEMPORAL_TLS_KEY"


def test_librdkafka_settings_pass_through() -> None:
    settings = load_settings({"EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                              "EVENTFLOW_LIBRDKAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                              "KAFKA_BOOTSTRAP_SERVERS": "broker:9093"})
    assert settings.kafka.client_config() == {"bootstrap.servers": "broker:9093", "security.protocol": "SASL_SSL",
                                              "sasl.mechanism": "SCRAM-SHA-512"}


def test_required_addresses_without_dev_defaults() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({}, dev_defaults=False)
    assert raised.value.variable == "KAFKA_BOOTSTRAP_SERVERS"


def test_readme_configuration_table_is_the_generated_one() -> None:
    from eventflow.cli import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*)\n<!-- settings-table:end -->", readme, re.S)
    assert match is not None, "README.md lacks the settings-table markers"
    assert match.group(1).strip() == settings_table().strip(), "run: eventflow config --update-readme"


def test_a_process_accepts_a_setting_only_another_process_reads() -> None:
    # One ConfigMap may carry both processes' settings: the unknown check is against their union.
    consumer = load_consumer({"EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES": "5", "EVENTFLOW_EMAIL_PROVIDER": "sendgrid"})
    assert consumer.core.consumer.max_in_flight == 512
    worker = load_worker({"EVENTFLOW_MAX_IN_FLIGHT": "7", "EVENTFLOW_TOPIC_ENCODINGS": "orders=json"})
    assert worker.worker.max_concurrent_activities == 100
    assert "KAFKA_BOOTSTRAP_SERVERS" not in variables(Process.WORKER)


@pytest.mark.parametrize(("load", "variable", "value"), [
    (load_worker, "EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES", "none"),
    (load_worker, "EVENTFLOW_SMS_PROVIDER", "pigeon"),
    (load_worker, "EVENTFLOW_QUIET_HOURS", "9pm-8am"),
    (load_consumer, "EVENTFLOW_DEFAULT_ENCODING", "protobuf"),
    (load_consumer, "EVENTFLOW_SUBJECT_NAME_STRATEGY", "subject"),
])
def test_each_process_validates_its_own_settings_at_start(load: Callable[[Mapping[str, str]], object],
                                                          variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load({variable: value})
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: invalid value {value!r}: ") and "\n" not in str(raised.value)


def test_secrets_are_secret_and_come_from_files_when_named(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("SG.from-file\n")
    sendgrid = SendGridSettings.load({"SENDGRID_API_KEY": "SG.plain", "SENDGRID_API_KEY_FILE": str(key)})
    assert sendgrid.api_key is not None and sendgrid.api_key.get_secret_value() == "SG.from-file"
    assert "SG.from-file" not in repr(sendgrid)
    temporal = TemporalSettings.load({"TEMPORAL_ADDRESS": "t:7233", "TEMPORAL_API_KEY": "tk-123"})
    assert "tk-123" not in repr(temporal) and temporal.api_key is not None
    with pytest.raises(ConfigError) as unreadable:
        TwilioSettings.load({"TWILIO_AUTH_TOKEN_FILE": str(tmp_path / "missing")})
    assert unreadable.value.variable == "TWILIO_AUTH_TOKEN_FILE"


def test_settings_come_from_the_classes_not_from_what_a_process_imported() -> None:
    # A fresh interpreter that imports only the settings layer knows every setting, and importing
    # it loads none of the packages above it (no registration by import side effect).
    script = ("import sys, json; from eventflow import settings; "
              "print(json.dumps([sorted(settings.variables()), "
              "sorted(m for m in sys.modules if m.split('.')[0] in "
              "('activities', 'consumer', 'events', 'journeys', 'workflows', 'devstack'))]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    fresh, imported = json.loads(result.stdout)
    assert imported == []
    import eventflow.worker  # noqa: F401  # formerly registered the worker's settings
    assert fresh == sorted(variables())


def test_the_table_says_which_process_reads_each_setting() -> None:
    rows = {row.split("|")[2].strip(" `"): [cell.strip() for cell in row.split("|")[1:-1]]
            for row in markdown_table().splitlines()[2:]}
    assert rows["EVENTFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES"][4] == "worker"
    assert rows["EVENTFLOW_SCHEMA_REGISTRY_URL"][4] == "consumer, cli"
    assert rows["TEMPORAL_ADDRESS"][4] == "consumer, worker, cli, codec-server, webhooks"
    assert rows["EVENTFLOW_WEBHOOKS_PUBLIC_URL"][4] == "worker, webhooks"
    assert rows["SENDGRID_WEBHOOK_VERIFICATION_KEY"][4] == "webhooks"
    assert rows["SENDGRID_API_KEY"][2] == "secret"
    assert set(rows) == {*variables(), "EVENTFLOW_LIBRDKAFKA_*"}


def test_vocabularies_agree_with_the_packages_that_use_them() -> None:
    from events.codec import ENCODINGS
    from events.registry import SUBJECT_STRATEGIES

    assert ENCODINGS == get_args(Encoding)
    assert SUBJECT_STRATEGIES == get_args(SubjectStrategy)


def test_no_module_reads_the_environment_outside_the_settings_layer() -> None:
    # devstack and bench (dev tooling) copy the environment into the child processes they start.
    root = Path(__file__).resolve().parents[2]
    readers = []
    # The settings layer: the groups (core/settings/) and the process compositions (eventflow/settings.py).
    allowed = {*(root / "core" / "settings").glob("*.py"), root / "eventflow" / "settings.py"}
    for package in ("core", "eventflow", "events", "journeys", "consumer", "workflows", "activities", "store"):
        for path in sorted((root / package).rglob("*.py")):
            if path in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
                        or isinstance(node, ast.alias) and node.name in ("environ", "getenv")):
                    readers.append(f"{path.relative_to(root)}:{node.lineno if hasattr(node, 'lineno') else '?'}")
    assert readers == []


def test_the_catalog_source_kafka_needs_signing_keys_outside_development(tmp_path: Path) -> None:
    from core.settings import CatalogSettings
    from tests.catalog_keys import CATALOG_KEYS, CATALOG_KEYS_TEXT

    kafka = {"EVENTFLOW_CATALOG_SOURCE": "kafka"}
    for load in (load_consumer, load_worker):
        with pytest.raises(ConfigError) as raised:
            load(kafka)
        assert raised.value.variable == "EVENTFLOW_CATALOG_SIGNING_KEYS"
        assert "EVENTFLOW_CATALOG_ALLOW_UNSIGNED=true" in raised.value.problem
    assert load_consumer({**kafka, "EVENTFLOW_CATALOG_ALLOW_UNSIGNED": "true"}).catalog.trust() is None
    assert CatalogSettings.load({}).source == "files"  # files need no keys...
    with pytest.raises(ConfigError):
        CatalogSettings.load({}).trust()  # ...but the catalog commands do
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotated in 2026\n{CATALOG_KEYS_TEXT}\n")
    loaded = CatalogSettings.load({**kafka, "EVENTFLOW_CATALOG_SIGNING_KEYS_FILE": str(keys_file)}).trust()
    assert loaded == CATALOG_KEYS


@pytest.mark.parametrize(("environ", "variable", "needle"), [
    ({"EVENTFLOW_CATALOG_SIGNING_KEYS": "k=c2hvcnQ="}, "EVENTFLOW_CATALOG_SIGNING_KEYS", "at least 32"),
    ({"EVENTFLOW_CATALOG_SIGNING_KEYS": "not-a-pair"}, "EVENTFLOW_CATALOG_SIGNING_KEYS", "is not id=base64key"),
    ({"EVENTFLOW_CATALOG_SIGNING_KEYS": f"a={'A' * 44},b={'B' * 44}"}, "EVENTFLOW_CATALOG_SIGNING_KEY_ID",
     "say which one signs"),
    ({"EVENTFLOW_CATALOG_SIGNING_KEY_ID": "a"}, "EVENTFLOW_CATALOG_SIGNING_KEY_ID", "no signing keys"),
    ({"EVENTFLOW_CATALOG_SIGNING_KEYS_FILE": "/nonexistent/keys"}, "EVENTFLOW_CATALOG_SIGNING_KEYS_FILE", "cannot read"),
])
def test_unusable_catalog_signing_keys_fail_naming_the_variable_never_the_key(
        environ: dict[str, str], variable: str, needle: str) -> None:
    from core.settings import CatalogSettings

    with pytest.raises(ConfigError) as raised:
        CatalogSettings.load(environ)
    assert raised.value.variable == variable and needle in raised.value.problem, raised.value
    assert "c2hvcnQ" not in str(raised.value) and "AAAA" not in str(raised.value)
def test_a_missing_kafka_tls_file_is_named_by_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_consumer({"EVENTFLOW_LIBRDKAFKA_SECURITY_PROTOCOL": "SSL",
                       "EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION": str(tmp_path / "ca.pem")})
    assert str(raised.value) == f"EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION: file {tmp_path / 'ca.pem'} does not exist"
    assert load_consumer({"EVENTFLOW_LIBRDKAFKA_SSL_CA_LOCATION": "probe"}).core.kafka.librdkafka == {
        "ssl.ca.location": "probe"}


def test_providers_reporting_is_a_comma_separated_list() -> None:
    # A plain `sendgrid` must load: a tuple without NoDecode made the env source parse it as JSON first.
    worker = load_worker({"EVENTFLOW_PROVIDERS_REPORTING": "sendgrid, twilio"})
    assert worker.worker.providers_reporting == ("sendgrid", "twilio")
    assert load_worker({"EVENTFLOW_PROVIDERS_REPORTING": "sendgrid"}).worker.providers_reporting == ("sendgrid",)
