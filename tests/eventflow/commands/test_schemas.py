"""``eventflow schemas check`` (against git history and the registry) and ``eventflow schemas register``."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from eventflow.cli import main
from events.schemas import ENVELOPE

AVRO = Path(__file__).resolve().parents[3] / "avro"
CUSTOMER = "com.eventflow.events.Customer.avsc"


def git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *argv],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose HEAD holds today's schemas; returns its avro/ folder."""
    shutil.copytree(AVRO, tmp_path / "avro")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "avro")
    git(tmp_path, "commit", "-q", "-m", "schemas v1")
    return tmp_path / "avro"


def add_customer_field(avro_dir: Path, field: Mapping[str, object]) -> None:
    path = avro_dir / CUSTOMER
    schema = json.loads(path.read_text())
    schema["fields"].append(field)
    path.write_text(json.dumps(schema, indent=2) + "\n")


OPTIONAL = {"name": "loyalty_tier", "type": ["null", "string"], "default": None, "doc": "Loyalty tier."}
REQUIRED = {"name": "segment", "type": "string", "doc": "Marketing segment."}


def test_git_check_passes_a_compatible_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_customer_field(repo, OPTIONAL)
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo)]) == 0
    out = capsys.readouterr().out
    every = len(list(repo.rglob("*.avsc")))  # the current schemas and the history kept beside them
    assert f"✓ {CUSTOMER}: compatible" in out and f"{every} of {every} schemas backward compatible with HEAD" in out


def test_git_check_fails_an_incompatible_change_with_a_diff(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_customer_field(repo, REQUIRED)
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo)]) == 1
    out = capsys.readouterr().out
    assert f"✗ {CUSTOMER}: incompatible" in out
    assert "Customer.segment: reader field segment is missing from the writer and has no default" in out
    assert f"--- HEAD:{CUSTOMER}" in out and '+      "name": "segment",' in out
    # the envelope inlines Customer, so it breaks too; types that do not use it stay compatible
    assert "✗ com.eventflow.events.CustomerEvent.avsc: incompatible" in out
    assert "✓ com.eventflow.events.Money.avsc: compatible" in out


def test_git_check_against_an_older_revision(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_customer_field(repo, REQUIRED)
    git(repo.parent, "rm", "-q", "-r", "avro/history")  # no kept versions: only git history counts here
    git(repo.parent, "commit", "-q", "-am", "schemas v2")
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo)]) == 0  # HEAD == working tree
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo), "--against", "HEAD~1"]) == 1
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo), "--against", "HEAD~1",
                 "--level", "forward"]) == 0  # old readers ignore the new field
    capsys.readouterr()


def test_registry_register_and_check(repo: Path, apicurio: str, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    client = SchemaRegistryClient({"url": apicurio})
    monkeypatch.setenv("EVENTFLOW_SCHEMA_REGISTRY_URL", apicurio)
    monkeypatch.setenv("EVENTFLOW_TOPICS", topic)
    assert main(["schemas", "check", "--avro-dir", str(repo)]) == 0  # nothing registered yet
    assert f"✓ {topic}-value: new" in capsys.readouterr().out
    assert main(["schemas", "register", "--avro-dir", str(repo)]) == 0
    assert client.get_versions(f"{topic}-value") == [1]
    client.set_compatibility(f"{topic}-value", "BACKWARD")

    add_customer_field(repo, OPTIONAL)
    assert main(["schemas", "check", "--avro-dir", str(repo)]) == 0
    assert f"✓ {topic}-value: compatible" in capsys.readouterr().out

    add_customer_field(repo, REQUIRED)
    assert main(["schemas", "check", "--avro-dir", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "CustomerEvent.customer.segment: reader field segment is missing" in out
    assert f"--- {topic}-value v1" in out and '+          "name": "segment",' in out
    assert main(["schemas", "register", "--avro-dir", str(repo)]) == 1  # the registry refuses it too
    assert "HTTP 409" in capsys.readouterr().out
    assert client.get_versions(f"{topic}-value") == [1]


@pytest.mark.parametrize("strategy, expected", [
    ("topic", "{topic}-value"), ("record", ENVELOPE), ("topic_record", f"{{topic}}-{ENVELOPE}")])
def test_subject_naming_strategies(strategy: str, expected: str, apicurio: str,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("EVENTFLOW_SCHEMA_REGISTRY_URL", apicurio)
    monkeypatch.setenv("EVENTFLOW_SUBJECT_NAME_STRATEGY", strategy)
    assert main(["schemas", "register", "--topic", topic]) == 0
    subject = expected.format(topic=topic)
    assert f"✓ {subject}: schema id" in capsys.readouterr().out
    assert SchemaRegistryClient({"url": apicurio}).get_versions(subject) == [1]
    capsys.readouterr()


def test_register_without_a_registry_names_the_variable(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTFLOW_SCHEMA_REGISTRY_URL", raising=False)
    assert main(["schemas", "register"]) == 2
    assert "EVENTFLOW_SCHEMA_REGISTRY_URL" in capsys.readouterr().err


def test_freeze_keeps_the_envelope_and_check_guards_every_kept_version(repo: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    kept_before = sorted(p.name for p in (repo / "history").glob("*.avsc"))
    add_customer_field(repo, OPTIONAL)
    assert main(["schemas", "freeze", "--avro-dir", str(repo)]) == 0
    assert "kept history/CustomerEvent-" in capsys.readouterr().out
    kept = sorted(p.name for p in (repo / "history").glob("*.avsc"))
    assert len(kept) == len(kept_before) + 1
    assert main(["schemas", "freeze", "--avro-dir", str(repo)]) == 0
    assert "already kept" in capsys.readouterr().out

    # retyping the new field is fine for HEAD (which lacks it) but breaks the version just kept
    path = repo / CUSTOMER
    schema = json.loads(path.read_text())
    next(f for f in schema["fields"] if f["name"] == "loyalty_tier")["type"] = ["null", "int"]
    path.write_text(json.dumps(schema))
    assert main(["schemas", "check", "--source", "git", "--avro-dir", str(repo)]) == 1
    out = capsys.readouterr().out
    new_file = next(n for n in kept if n not in kept_before)
    assert f"✓ {CUSTOMER}: compatible" in out
    assert f"✗ history/{new_file}: incompatible" in out
    assert "customer.loyalty_tier[string]: writer union branch string has no matching branch" in out
