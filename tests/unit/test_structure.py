"""The shape of ``src/cdb``: packages import each other without cycles, modules stay small.

The package graph is read from the source with ``ast`` (every ``import`` and
``from ... import``, including those under ``TYPE_CHECKING`` and inside functions: a
lazy import is still a dependency). Every package counts, subpackages too
(``cdb.chaos.run`` and ``cdb.chaos.reports`` may not import each other both ways); a
top-level module such as ``cdb/config.py`` counts as a package of its own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cdb"
MAX_LINES = 500
DATA_TABLES: frozenset[str] = frozenset()
"""Modules allowed past ``MAX_LINES`` because they are tables of data, not code."""
NO_CONFIG = ("cdb.bus", "cdb.resilience", "cdb.events")
"""Packages that take their own small settings, never ``cdb.config``."""


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The package a module belongs to (``cdb.chaos.run.plan`` -> ``cdb.chaos.run``); a
    module at the top (``cdb.config``) is a unit of its own."""
    path = SRC.parent.joinpath(*module.split("."))
    if path.is_dir():
        return module
    parent = module.rpartition(".")[0]
    return module if parent == "cdb" else parent


def _imports(path: Path) -> set[str]:
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from cdb import config`` names a module, not only the package.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("cdb.")}


def _graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the modules that make the edge."""
    modules = {_module(path) for path in SRC.rglob("*.py")}
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in SRC.rglob("*.py"):
        module = _module(path)
        me = _unit(module)
        for target in _imports(path):
            if target not in modules or target == "cdb":
                continue
            other = _unit(target)
            if other != me:
                edges[me][other].add(module)
    return edges


def _cycles(edges: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_packages_import_each_other_without_cycles() -> None:
    edges = _graph()
    cycles = _cycles(edges)
    detail = [
        f"{a} -> {b} ({', '.join(sorted(edges[a][b]))})"
        for component in cycles for a in component for b in component if b in edges[a]
    ]
    assert not cycles, "import cycles between packages:\n" + "\n".join(detail)


@pytest.mark.parametrize("unit", NO_CONFIG)
def test_low_level_packages_import_no_config(unit: str) -> None:
    assert "cdb.config" not in _graph().get(unit, {}), (
        f"{unit} imports cdb.config: {sorted(_graph()[unit]['cdb.config'])}")


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself can fail: a two-package loop is reported."""
    edges = {"a": {"b": {"cdb.a.x"}}, "b": {"a": {"cdb.b.y"}}, "c": {"a": {"cdb.c"}}}
    assert _cycles(edges) == [["a", "b"]]


def test_no_module_over_the_line_limit() -> None:
    over = {
        str(path.relative_to(SRC.parent)): lines
        for path in SRC.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(SRC.parent)) not in DATA_TABLES
    }
    assert not over, f"modules over {MAX_LINES} lines: {over}"
