"""Settings are validated once, fail naming the variable, and the README table is generated from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventflow.errors import ConfigError
from eventflow.settings import load_settings


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


def test_an_unknown_eventflow_variable_is_an_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"EVENTFLOW_MAX_INFLIGHT": "10"})
    assert raised.value.variable == "EVENTFLOW_MAX_INFLIGHT"


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
