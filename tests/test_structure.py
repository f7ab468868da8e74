"""The package's structure: one-way layering between subpackages, one name per public class.

Every module under ``src/carbonscaler`` is parsed (not imported) with :mod:`ast`; every import
counts, at module level or inside a function. A subpackage (``control``, ``backends``, ...) or a
top-level module (``forecast``, ``trace``, ...) is one node; ``carbonscaler/__init__.py`` is the
node ``carbonscaler``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "carbonscaler"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. carbonscaler.control.controller
    path: Path
    tree: ast.Module

    @property
    def node(self) -> str:
        return node_of(self.name)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def node_of(module: str) -> str:
    """The graph node of a dotted module name inside the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def _modules() -> list[Module]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found.append(Module(".".join(parts), path, ast.parse(path.read_text(encoding="utf-8"))))
    return found


MODULES = _modules()
KNOWN = {m.name for m in MODULES}


def imported_modules(module: Module) -> Iterator[tuple[str, int]]:
    """Every module of the package that ``module`` imports, with the line, anywhere in it."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.name.split(".")
                # A package's own name is its __init__; one dot means the package itself.
                drop = node.level - 1 if module.is_package else node.level
                base = base[: len(base) - drop]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in KNOWN]
            # `from carbonscaler import datasets` is an import of datasets; the package's own
            # __init__ runs on any import, so it counts only for the names it defines.
            if target != PACKAGE or len(submodules) < len(node.names):
                yield target, node.lineno
            for submodule in submodules:
                yield submodule, node.lineno


def _graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> the imports (``file:line module``) behind the edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module in MODULES:
        for target, line in imported_modules(module):
            src, dst = module.node, node_of(target)
            if src != dst:
                where = f"{module.path.relative_to(ROOT.parent)}:{line} {target}"
                graph[src][dst].append(where)
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    nodes = set(graph) | {w for edges in graph.values() for w in edges}
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def test_the_parser_sees_the_package() -> None:
    nodes = {m.node for m in MODULES}
    assert {"control", "backends", "operator", "kube", "cli", "forecast", "trace"} <= nodes
    # Function-level imports count: the operator command imports the operator lazily.
    assert "operator" in GRAPH["cli"]


def test_no_import_cycle_between_subpackages() -> None:
    cycles = _cycles(GRAPH)
    detail = []
    for component in cycles:
        for src in component:
            for dst in component:
                for where in GRAPH.get(src, {}).get(dst, []):
                    detail.append(f"  {src} -> {dst}: {where}")
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(detail)


# Who may not import whom (module-name prefixes), beyond "no cycles".
FORBIDDEN = {
    "kube": ("operator", "backends", "control", "cli"),
    "backends": ("operator", "control", "cli"),
    "control": ("backends.local", "backends.kubernetes", "backends.profiler", "operator", "cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layering(layer: str) -> None:
    bad = []
    for module in MODULES:
        if module.node != layer:
            continue
        for target, line in imported_modules(module):
            for prefix in FORBIDDEN[layer]:
                full = f"{PACKAGE}.{prefix}"
                if target == full or target.startswith(full + "."):
                    bad.append(f"{module.path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_control_reaches_backends_only_through_the_interface() -> None:
    # `from carbonscaler.backends import LocalBackend` would be the local backend by another name.
    bad = [
        f"{module.path.relative_to(ROOT.parent)}:{line} imports {target}"
        for module in MODULES
        if module.node == "control"
        for target, line in imported_modules(module)
        if node_of(target) == "backends" and target != f"{PACKAGE}.backends.base"
    ]
    assert not bad, "control may import only carbonscaler.backends.base:\n" + "\n".join(bad)


class _PublicClasses(ast.NodeVisitor):
    """Classes a module defines at module level or inside classes (not inside functions)."""

    def __init__(self) -> None:
        self.names: list[tuple[str, int]] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if not node.name.startswith("_"):
            self.names.append((node.name, node.lineno))
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        return  # local classes are nobody's API

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        return


def test_no_two_public_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for module in MODULES:
        visitor = _PublicClasses()
        visitor.visit(module.tree)
        for name, line in visitor.names:
            where[name].append(f"{module.path.relative_to(ROOT.parent)}:{line}")
    duplicates = {name: places for name, places in where.items() if len(places) > 1}
    assert not duplicates, "public class names defined more than once:\n" + "\n".join(
        f"  {name}: {', '.join(places)}" for name, places in sorted(duplicates.items())
    )
