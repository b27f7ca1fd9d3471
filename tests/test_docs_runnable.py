"""The documents' runnable shell blocks, run as written against the test servers.

A block marked ``<!-- runnable -->`` on the line before its fence is run line by line, the way a
newcomer pastes it: ``.venv/bin/eventflow`` is this interpreter's ``eventflow.cli``, ``export``
sets a variable for the lines after it, a line ending in ``&`` runs in the background until the
block ends, and every other line must exit 0. The servers,
topics and task queue are this test's own, so the blocks cannot disturb other tests.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import Endpoints

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "journeys/README.md")
_MARK = "<!-- runnable -->"


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
            commands = tuple(_without_comment(text) for text in lines[fence + 1:end] if _without_comment(text))
            blocks.append(Block(document, fence + 1, commands))
    return blocks


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


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", runnable_blocks(), ids=str)
def test_a_runnable_block_runs_as_written(block: Block, endpoints: Endpoints, fresh_database_url: str, unique: str,
                                          tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTFLOW_")}
    env.update({
        "PYTHONPATH": str(REPO),
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "TEMPORAL_ADDRESS": endpoints.temporal_address,
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
    subprocess.run([sys.executable, "-m", "eventflow.cli", "db", "migrate"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for command in block.commands:
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
            assert result.returncode == 0, f"{block}: `{command}` exited {result.returncode}:\n" \
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
