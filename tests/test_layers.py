"""The layer rule, checked over the import graph of the production packages.

Layers, bottom to top (docs/architecture.md, "Layers"); a module may import its own layer and the
layers below it, never one above:

1. core      -- ``eventflow.core``: errors, settings, logging, the ops HTTP server, the Temporal client
2. events    -- event contracts and the codec
3. activities -- channels and the send activity (and template rendering, which journeys validate with)
4. journeys  -- the journey model: definitions, steps, expressions, routing
5. workflows -- the interpreter, sending, preferences and its client, the worker
6. consumer  -- the Kafka-to-Temporal bridge
7. tools     -- processes, CLIs and authoring tools: ``eventflow`` (cli, worker, demo, temporal setup),
   ``consumer.app``/``cli``/``dlq_tools``, ``events.cli``, ``journeys.cli``/``catalog_cli``/``simulate``, ``activities.config``

``devstack`` (local servers for development) is imported only by the development commands
(``eventflow.cli``, ``eventflow.demo``) and the simulator; never by what runs in production.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("eventflow", "devstack", "events", "journeys", "consumer", "workflows", "activities")
LAYERS = ("core", "events", "activities", "journeys", "workflows", "consumer", "tools")
TOOLS = ("consumer.app", "consumer.cli", "consumer.dlq_tools", "events.cli", "journeys.cli", "journeys.catalog_cli", "journeys.simulate",
         "activities.config")
DEVSTACK_USERS = ("eventflow.cli", "eventflow.demo", "journeys.simulate")


def layer_of(module: str) -> str | None:
    """The layer of a production module; None for devstack, which sits outside the stack."""
    if module == "devstack" or module.startswith("devstack."):
        return None
    if module == "eventflow.core" or module.startswith("eventflow.core."):
        return "core"
    if any(module == tool or module.startswith(tool + ".") for tool in TOOLS):
        return "tools"
    package = module.split(".")[0]
    return "tools" if package == "eventflow" else package


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def _known(name: str, modules: set[str]) -> str | None:
    """``name`` as a module (``from pkg import module`` names a module; ``from m import f`` does not)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_module_imports_a_layer_above_its_own() -> None:
    modules = dict(_modules())
    problems: set[str] = set()
    for module, path in modules.items():
        own = layer_of(module)
        for line, name in _imports(path):
            target = _known(name, set(modules))
            if target is None:
                continue
            theirs = layer_of(target)
            if theirs is None:
                if not any(module == user or module.startswith(user + ".") for user in DEVSTACK_USERS) \
                        and layer_of(module) is not None:
                    problems.add(f"{path.relative_to(REPO)}:{line}: {module} imports dev tooling {target}")
                continue
            if own is not None and LAYERS.index(theirs) > LAYERS.index(own):
                problems.add(f"{path.relative_to(REPO)}:{line}: {module} ({own}) imports {target} ({theirs})")
    assert sorted(problems) == []


def test_the_rule_sees_a_violation() -> None:
    """The check itself: an upward import is classified as one."""
    assert LAYERS.index(layer_of("consumer.handler") or "") > LAYERS.index(layer_of("events.codec") or "")
    assert layer_of("eventflow.worker_app") == "tools"
    assert layer_of("devstack.stack") is None
