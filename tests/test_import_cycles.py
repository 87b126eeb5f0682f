"""No import circles in ``pipelines/`` or ``warehouse/``: imports point one way (docs/design.md).

Every ``import`` statement Python runs counts, wherever it sits: an import hidden inside a
function to dodge a circle is still the circle. Only imports under ``if TYPE_CHECKING:`` are
left out: the type checker reads them, Python never runs them. ``from a import b`` is an edge
to ``a.b`` when that is a module, else to ``a``; the package ``__init__`` Python runs before any
of its modules is not counted as an edge of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import PROJECT_ROOT

PACKAGES = ("pipelines", "warehouse")


def module_files(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every module of the packages, by dotted name (``a/__init__.py`` is ``a``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                          for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:  # ``import a.b.c`` of a package
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = PROJECT_ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, set(group)) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path a -> ... -> a inside one strongly connected group (for the failure message)."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return sorted(group)


def test_no_module_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_sees_circles_direct_hidden_and_relative(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "a.py").write_text("from pipelines.b import thing\n")
    (tmp_path / "pipelines" / "b.py").write_text("def f():\n    from pipelines import a\n")
    (tmp_path / "warehouse" / "c.py").write_text("from . import d\n")
    (tmp_path / "warehouse" / "d.py").write_text("import warehouse.e.f\n")
    (tmp_path / "warehouse" / "e").mkdir()
    (tmp_path / "warehouse" / "e" / "__init__.py").write_text("from .. import c\n")
    (tmp_path / "warehouse" / "g.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    import warehouse.h\nelse:\n    import os\n")
    (tmp_path / "warehouse" / "h.py").write_text("import warehouse.g\n")
    graph = import_graph(tmp_path)
    assert graph["warehouse.d"] == {"warehouse.e"} and graph["warehouse.g"] == set()
    assert sorted(cycles(graph)) == [["pipelines.a", "pipelines.b", "pipelines.a"],
                                     ["warehouse.c", "warehouse.d", "warehouse.e", "warehouse.c"]]
