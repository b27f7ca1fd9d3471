"""The documents' runnable shell blocks, run as written against the test servers.

A block marked ``<!-- runnable -->`` on the line before its fence is run line by line, the way a
newcomer pastes it: ``.venv/bin/eventflow`` is this interpreter's ``eventflow.cli``, ``export``
sets a variable for the lines after it, a line ending in ``&`` runs in the background until the
block ends (and must still run then), and every other line must exit 0. As in a shell, a line
ending in ``\\`` goes on on the next, and ``$NAME``, ``${NAME}`` and ``$(command)`` (a simple
command) are replaced outside single quotes. The servers, Temporal namespace, database, topics and
task queue are this test's own, so the blocks cannot disturb other tests or meet an earlier run's
journeys; so are ``/tmp/`` (a folder of the test's) and the dev ports the documents name
(`DEV_PORTS`: each becomes a free port, and its variable says so to the process that listens on it).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from devstack import Endpoints
from eventflow.commands.temporal_setup import missing_search_attributes
from tests.harness import eventually

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "journeys/README.md")
_MARK = "<!-- runnable -->"
#: The dev ports the documents name, and the variable that moves each one's listener.
DEV_PORTS = {8080: "EVENTFLOW_WEBHOOKS_PORT", 8095: "EVENTFLOW_DEV_PUSH_PORT", 2525: "EVENTFLOW_DEV_SMTP_PORT"}
_DEV_PORT = re.compile(rf"(?<=[:=])({'|'.join(map(str, DEV_PORTS))})\b")
_SCRATCH = re.compile(r"(?<![\w./])/tmp/")
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    commands: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.document}:{self.line}"


def runnable_blocks() -> list[Block]:
    """Every marked shell block of the documents, with its first line number."""
    blocks = []
    for document in DOCUMENTS:
        lines = (REPO / document).read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip() != _MARK:
                continue
            fence = number + 1
            assert lines[fence].startswith("```sh"), f"{document}:{fence + 1}: {_MARK} must precede a ```sh block"
            end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
            joined = "\n".join(lines[fence + 1:end]).replace("\\\n", " ").splitlines()
            commands = tuple(_without_comment(text) for text in joined if _without_comment(text))
            blocks.append(Block(document, fence + 1, commands))
    return blocks


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _localised(command: str, scratch: Path, ports: dict[int, int]) -> str:
    """The command with ``/tmp/`` in ``scratch`` and each dev port this test's own."""
    command = _SCRATCH.sub(f"{scratch}/", command)
    return _DEV_PORT.sub(lambda match: str(ports[int(match.group(1))]), command)


def _expand(command: str, env: dict[str, str]) -> str:
    """What a shell makes of ``$(command)``, ``$NAME`` and ``${NAME}`` outside single quotes."""
    def substitute(match: re.Match[str]) -> str:
        return subprocess.run(shlex.split(match.group(1)), cwd=REPO, env=env, capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()

    pieces = re.split(r"('[^']*')", command)
    for index in range(0, len(pieces), 2):  # the even pieces lie outside single quotes
        pieces[index] = _SUBSTITUTION.sub(substitute, pieces[index])
        pieces[index] = _VARIABLE.sub(lambda match: env.get(match.group(1) or match.group(2), ""), pieces[index])
    return "".join(pieces)


def _without_comment(text: str) -> str:
    return re.split(r"\s+#\s", f" {text.strip()} ", maxsplit=1)[0].strip()


def _argv(command: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(command)
    assignments = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    if words and words[0] == ".venv/bin/eventflow":
        words = [sys.executable, "-m", "eventflow.cli", *words[1:]]
    return assignments, words


def test_the_documents_mark_their_runnable_blocks() -> None:
    assert {block.document for block in runnable_blocks()} == set(DOCUMENTS)
    # The README's walk-throughs to the local SMTP server and push service run as written too.
    readme = " ".join(command for block in runnable_blocks() if block.document == "README.md"
                      for command in block.commands)
    for needle in ("dev mail-server serve", "dev mail-server show", "dev push-service serve",
                   "dev push-service show", "EVENTFLOW_WEBPUSH_PROVIDER=webpush", "EVENTFLOW_EMAIL_PROVIDER=smtp"):
        assert needle in readme, f"no runnable README block has `{needle}`"


def test_a_line_is_run_as_a_shell_would_with_the_tests_own_folder_and_ports(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "TOKEN": "t0k"}
    line = _localised("curl -H 'a $TOKEN' -H \"b $TOKEN ${TOKEN}\" -d @/tmp/push/b.json http://127.0.0.1:8080/x "
                      "SMTP_PORT=2525 $(echo made) /x/tmp/y", tmp_path, {8080: 1, 8095: 2, 2525: 3})
    assert shlex.split(_expand(line, env)) == [
        "curl", "-H", "a $TOKEN", "-H", "b t0k t0k", "-d", f"@{tmp_path}/push/b.json", "http://127.0.0.1:1/x",
        "SMTP_PORT=3", "made", "/x/tmp/y"]


@pytest.fixture
async def own_namespace(temporal_client: Client, unique: str) -> str:
    """A Temporal namespace of this test's: the documents' fixed ids (``cust-push-1``) meet no earlier run's journeys."""
    name = f"docs-{unique}"
    await temporal_client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=Duration(seconds=86400)))

    async def usable() -> bool:
        try:
            await missing_search_attributes(temporal_client, name)
        except RPCError:
            return False  # the new namespace reaches the frontend's cache shortly after
        return True

    await eventually(usable, message=f"namespace {name} usable")
    return name


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", runnable_blocks(), ids=str)
def test_a_runnable_block_runs_as_written(block: Block, endpoints: Endpoints, fresh_database_url: str, unique: str,
                                          own_namespace: str, tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTFLOW_")}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ports = {port: _free_port() for port in DEV_PORTS}
    env.update({variable: str(ports[port]) for port, variable in DEV_PORTS.items()})
    env.update({
        "PYTHONPATH": str(REPO),
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "TEMPORAL_ADDRESS": endpoints.temporal_address,
        "TEMPORAL_NAMESPACE": own_namespace,
        "EVENTFLOW_TOPICS": f"docs-events-{unique}",
        "EVENTFLOW_DLQ_TOPIC": f"docs-events-{unique}.dlq",
        "EVENTFLOW_CONSUMER_GROUP": f"docs-{unique}",
        "EVENTFLOW_TASK_QUEUE": f"docs-journeys-{unique}",
        "EVENTFLOW_CATALOG_TOPIC": f"docs-catalog-{unique}",
        "EVENTFLOW_METRICS_PORT": "0",
        "EVENTFLOW_TEMPORAL_METRICS_PORT": "0",
        "EVENTFLOW_CACHE_DIR": str(tmp_path / "cache"),
        # The customer store, as `make run`'s stack has it: a database of this test's own, migrated.
        "EVENTFLOW_DATABASE_URL": fresh_database_url,
    })
    for setup in (["db", "migrate"], ["temporal", "setup"]):  # as `eventflow dev up` has them on the dev stack
        subprocess.run([sys.executable, "-m", "eventflow.cli", *setup], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for written in block.commands:
            command = _expand(_localised(written, scratch, ports), env)
            if command.startswith("export "):
                for word in shlex.split(command)[1:]:
                    name, _, value = word.partition("=")
                    env[name] = value
                continue
            assignments, argv = _argv(command.removesuffix("&").strip())
            if command.endswith("&"):
                log = (tmp_path / f"background-{len(background)}.log").open("wb")
                background.append(subprocess.Popen(argv, cwd=REPO, env={**env, **assignments}, stdout=log,
                                                   stderr=subprocess.STDOUT))
                continue
            result = subprocess.run(argv, cwd=REPO, env={**env, **assignments}, capture_output=True, text=True,
                                    timeout=240, check=False)
            assert result.returncode == 0, f"{block}: `{written}` exited {result.returncode}:\n" \
                                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        for index, process in enumerate(background):
            assert process.poll() is None, f"{block}: a background command exited early " \
                                           f"({(tmp_path / f'background-{index}.log').read_text()[-2000:]})"
    finally:
        for process in background:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
