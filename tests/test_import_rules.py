"""The package's layout rules (docs/ARCHITECTURE.md §3), checked on the source with ``ast``.

Every import counts for the layers: at module level, inside functions, and under
``TYPE_CHECKING`` (a dependency the type checker follows is a dependency of the design). Import
circles are judged on the imports that run.

- ui -> core -> worker -> outbox; worker -> backends -> mapping; nothing reaches back up, and
  no module imports itself back through others (no import circles); nothing in the core or
  below imports the composition root (core/runtime.py).
- ``mapping`` imports only ``mapping``, the standard library and the host's types.
- ``exchangelib`` only in ``backends/ews``; ``httpx`` and ``msal`` only in ``backends/graph``.
- ``sandbox`` stands apart: only ``cli`` (the demo and sandbox commands) and the pytest fixture
  modules import it, and it imports nothing of the plugin.
- ``tsl_hostapi`` imports nothing of the plugin.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import tsl_exchange_plugin
import tsl_hostapi

PKG = "tsl_exchange_plugin"
PACKAGE_DIR = Path(tsl_exchange_plugin.__file__).parent
HOSTAPI_DIR = Path(tsl_hostapi.__file__).parent

# The pytest fixture modules: left out of the wheel, free to use anything.
TESTING = {f"{PKG}.testing", f"{PKG}.sandbox.testing", f"{PKG}.sandbox.graph.testing"}

# Modules at the top of the package that every layer may use: the package's id, the signals,
# the credential vault, log masking, the plugin's log file, the push log and the licence.
BASE_MODULES = {"", "signals", "credentials", "logredact", "logfile", "audit", "licence"}

# Which layers each layer may import (besides itself and "base").
ALLOWED: dict[str, set[str]] = {
    "plugin": {"ui", "core", "worker", "outbox", "backends", "mapping"},
    "cli": {"plugin", "ui", "core", "worker", "outbox", "backends", "mapping", "sandbox"},
    "ui": {"core", "worker", "outbox", "backends", "mapping"},
    "core": {"worker", "outbox", "backends", "mapping"},
    "worker": {"outbox", "backends", "mapping"},
    "outbox": set(),
    "backends": {"mapping"},
    "mapping": set(),
    "base": set(),
    "sandbox": set(),
}


def layer(module: str) -> str:
    """The layer of a module of the plugin: its first package below the top, or "base"."""
    first = module.removeprefix(PKG).lstrip(".").split(".")[0]
    if first in BASE_MODULES:
        return "base"
    return first


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (of the plugin) or top-level name (third party)
    line: int
    typing_only: bool = False  # under ``if TYPE_CHECKING:``: names a type, never runs


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def parse_modules(root: Path, package: str) -> dict[str, tuple[Path, ast.Module]]:
    return {
        module_name(p, root, package): (p, ast.parse(p.read_text("utf-8"), str(p)))
        for p in sorted(root.rglob("*.py"))
    }


def _typing_only_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def imports(module: str, path: Path, tree: ast.Module, known: set[str]) -> list[Edge]:
    """Every import in a module: plugin modules by full name, anything else by its top name.
    ``from package import name`` counts as an import of ``package.name`` when that is a module."""
    is_package = path.name == "__init__.py"
    typing_only = _typing_only_nodes(tree)
    edges = []
    for node in ast.walk(tree):
        typed = id(node) in typing_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target not in known and "." in target and target.startswith(PKG):
                    target = target.rsplit(".", 1)[0]
                name = target if target.startswith(PKG) else alias.name
                edges.append(Edge(module, name, node.lineno, typed))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source == PKG or source.startswith(PKG + "."):
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    edges.append(Edge(module, sub if sub in known else source, node.lineno, typed))
            else:
                edges.append(Edge(module, source, node.lineno, typed))
    return edges


@pytest.fixture(scope="module")
def graph() -> list[Edge]:
    modules = parse_modules(PACKAGE_DIR, PKG)
    known = set(modules)
    edges: list[Edge] = []
    for name, (path, tree) in modules.items():
        edges += imports(name, path, tree, known)
    return edges


def plugin_edges(graph: list[Edge]) -> list[Edge]:
    return [e for e in graph if e.target.startswith(PKG) and e.target != e.source]


def third_party(graph: list[Edge], top: str) -> set[str]:
    """Modules of the plugin (fixtures left out) that import ``top`` or one of its modules."""
    return {
        e.source
        for e in graph
        if (e.target == top or e.target.startswith(top + ".")) and e.source not in TESTING
    }


def cycles(nodes: set[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def show(edges: list[Edge]) -> str:
    return "\n".join(f"  {e.source} -> {e.target} (Zeile {e.line})" for e in edges)


def test_every_module_belongs_to_a_known_layer(graph):
    modules = {e.source for e in graph} | {e.target for e in plugin_edges(graph)}
    unknown = sorted(m for m in modules if layer(m) not in ALLOWED and m not in TESTING)
    assert not unknown, f"Module außerhalb der Schichten (ALLOWED ergänzen oder verschieben): {unknown}"


def test_layers_only_import_downwards(graph):
    wrong = [
        e
        for e in plugin_edges(graph)
        if e.source not in TESTING
        and layer(e.target) != layer(e.source)
        and layer(e.target) != "base"
        and layer(e.target) not in ALLOWED[layer(e.source)]
    ]
    assert not wrong, "Importe gegen die Schichtung:\n" + show(wrong)


def test_the_base_modules_import_no_layer(graph):
    wrong = [e for e in plugin_edges(graph) if layer(e.source) == "base" and layer(e.target) != "base"]
    assert not wrong, show(wrong)


def test_no_import_circle_between_layers(graph):
    pairs = {
        (layer(e.source), layer(e.target))
        for e in plugin_edges(graph)
        if e.source not in TESTING and layer(e.source) != layer(e.target)
    }
    assert not cycles(set(ALLOWED), pairs)


def test_no_import_circle_between_modules(graph):
    # Imports that run (module level and inside functions). One under TYPE_CHECKING only names a
    # type for the checker (a helper module naming the session class it serves); the layer rules
    # above still count it.
    edges = [e for e in plugin_edges(graph) if not e.typing_only]
    nodes = {e.source for e in graph} | {e.target for e in edges}
    found = cycles(nodes, {(e.source, e.target) for e in edges})
    assert not found, f"Importkreise: {found}"


def test_nothing_the_composition_root_builds_names_it_back(graph):
    # core/runtime.py builds the core's parts; they see it through core/parts.CoreParts, not even
    # a type hint names the root (the layers above and core/recovery.py, which builds it, may).
    root = f"{PKG}.core.runtime"
    succ: dict[str, set[str]] = {}
    for e in plugin_edges(graph):
        succ.setdefault(e.source, set()).add(e.target)
    below, todo = set(), [root]
    while todo:
        for target in succ.get(todo.pop(), ()):
            if target not in below and target != root:
                below.add(target)
                todo.append(target)
    wrong = [e for e in plugin_edges(graph) if e.target == root and e.source in below]
    assert below and not wrong, show(wrong)


def test_mapping_is_pure(graph):
    allowed_outside = set(sys.stdlib_module_names) | {"tsl_hostapi"}
    wrong = [
        e
        for e in graph
        if layer(e.source) == "mapping"
        and (
            (e.target.startswith(PKG) and layer(e.target) != "mapping")
            or (not e.target.startswith(PKG) and e.target.split(".")[0] not in allowed_outside)
        )
    ]
    assert not wrong, "mapping/ importiert nur mapping/, die Standardbibliothek und tsl_hostapi:\n" + show(
        wrong
    )


def test_each_client_library_has_one_backend(graph):
    ews = third_party(graph, "exchangelib")
    assert ews and all(m.startswith(f"{PKG}.backends.ews.") for m in ews), sorted(ews)
    for library in ("httpx", "msal"):
        users = third_party(graph, library)
        assert users and all(m.startswith(f"{PKG}.backends.graph.") for m in users), (library, sorted(users))


def test_the_sandbox_stands_apart(graph):
    into = [
        e
        for e in plugin_edges(graph)
        if layer(e.target) == "sandbox"
        and layer(e.source) not in ("sandbox", "cli")
        and e.source not in TESTING
    ]
    assert not into, "Nur cli/ und die Test-Fixtures nutzen die Sandbox:\n" + show(into)
    out = [
        e
        for e in plugin_edges(graph)
        if layer(e.source) == "sandbox" and e.source not in TESTING and layer(e.target) != "sandbox"
    ]
    assert not out, "Die Sandbox importiert nichts vom Plugin:\n" + show(out)


def test_the_host_api_imports_nothing_of_the_plugin():
    modules = parse_modules(HOSTAPI_DIR, "tsl_hostapi")
    wrong = [
        e
        for name, (path, tree) in modules.items()
        for e in imports(name, path, tree, set(modules))
        if e.target.split(".")[0] == PKG
    ]
    assert modules and not wrong, show(wrong)


def test_the_rules_see_the_imports_they_judge(graph):
    # A parser that saw nothing would pass every rule above: it must read module-level imports,
    # imports inside functions and imports under TYPE_CHECKING alike.
    def seen(source: str, target: str) -> bool:
        return any(e.source == f"{PKG}.{source}" and e.target == f"{PKG}.{target}" for e in graph)

    assert seen("core.runtime", "core.enqueue")  # module level
    assert seen("core.runtime", "backends.routing")  # inside a function
    assert seen("ui.settings", "core.runtime")  # under TYPE_CHECKING
    assert any(e.typing_only for e in graph) and not all(e.typing_only for e in graph)
