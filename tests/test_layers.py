"""The layer rule, checked over the import graph of the production packages.

The folders are the layers, bottom to top (docs/architecture.md, "Layers"). A module may import its
own package and the packages below it, never one above, and no package needs an exception:

1. ``core``       -- errors, settings machinery, logging, the ops HTTP listener, the payload codec,
   tracing, the Temporal client and the shared vocabularies (channels, contact fields, encodings)
2. ``events``     -- event contracts, sources and the codec
3. ``activities`` -- channels and the send activity (and template rendering)
4. ``journeys``   -- the journey model: definitions, steps, expressions, routing, validation
5. ``workflows``  -- the interpreter, sending, preferences and the worker's registrations
6. ``store``      -- the customer store in PostgreSQL: profiles, consent, suppressions, the send ledger
7. ``consumer``   -- everything that reads or writes Kafka: the bridge, feedback, the catalog topic
8. ``devstack``   -- local Kafka, Temporal and PostgreSQL servers (and a Web Push service and an SMTP
   server) for development and tests
9. ``eventflow``  -- the roof: every process (consume, worker, webhooks, codec server, demo) and
   every command line (``eventflow.cli`` and ``eventflow.commands``)
10. ``bench``     -- the benchmark, which drives the processes

Imports inside functions count like any other, so a circle cannot hide in one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "events", "activities", "journeys", "workflows", "store", "consumer", "devstack", "eventflow",
          "bench")


def layer_of(module: str) -> str:
    """The layer of a production module: its top-level package."""
    return module.split(".")[0]


def _modules() -> Iterator[tuple[str, Path]]:
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import module`` imports the module; ``from module import name`` the module
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in LAYERS:
                yield node.lineno, name


def upward_imports() -> list[str]:
    """Every import of a module from a package above the importer's, as ``path:line: a imports b``."""
    problems: set[str] = set()
    for module, path in _modules():
        own = LAYERS.index(layer_of(module))
        for line, name in _imports(path):
            if LAYERS.index(layer_of(name)) > own:
                problems.add(f"{path.relative_to(REPO)}:{line}: {module} imports {name}")
    return sorted(problems)


def module_cycles() -> list[list[str]]:
    """Import circles between modules (strongly connected components with more than one module)."""
    modules = dict(_modules())
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for _, name in _imports(path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_no_import_circle() -> None:
    assert module_cycles() == []


def test_every_package_has_a_layer() -> None:
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests", "helm"}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_the_rule_sees_a_violation() -> None:
    """The check itself: an upward import is classified as one."""
    assert LAYERS.index(layer_of("consumer.handler")) > LAYERS.index(layer_of("events.codec"))
    assert LAYERS.index(layer_of("eventflow.worker")) > LAYERS.index(layer_of("workflows.worker"))
