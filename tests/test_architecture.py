"""The import graph of the package keeps the layering drawn in docs/architecture.md.

Every import statement of every module counts, including those inside functions and under
``TYPE_CHECKING``: a circle hidden by a late import is still a circle. The layers are read from the
doc itself, so the picture and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, Path]:
    """Import name → folder, as pyproject.toml maps them (the ``ebyd_bench`` folder itself included)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    return {"ebyd_bench": ROOT / "ebyd_bench", **mapped}


def modules() -> dict[str, Path]:
    """Every module of the project: dotted name → file."""
    out = {}
    for package, folder in _package_dirs().items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project modules it imports (relative imports resolved)."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        # `import a.b.c` also imports its parent packages; only the deepest project module matters here
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def package_of(name: str, mods: dict[str, Path]) -> str:
    return name if mods[name].name == "__init__.py" else name.rpartition(".")[0]


def documented_layers() -> list[list[str]]:
    """The layers of docs/architecture.md's ``layers`` block, lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its ```text layers block"
    rows = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    return [row.split() for row in reversed(rows) if row]  # written top first


def test_no_import_circle_between_files():
    mods = modules()
    graph = import_graph(mods)
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles between files: {circles}"


def test_no_package_imports_a_package_above_it():
    mods = modules()
    rank = {pkg: i for i, layer in enumerate(documented_layers()) for pkg in layer}
    packages = {package_of(m, mods) for m in mods}
    assert packages <= set(rank), f"packages missing from docs/architecture.md's layers: {sorted(packages - set(rank))}"
    upward = defaultdict(list)
    for source, targets in import_graph(mods).items():
        for target in targets:
            a, b = package_of(source, mods), package_of(target, mods)
            if rank[b] > rank[a]:
                upward[f"{a} -> {b}"].append(f"{source} imports {target}")
    assert not upward, f"imports of a package above the importer: {dict(upward)}"


def test_the_graph_sees_late_imports(tmp_path):
    """The checker itself: an import inside a function is an edge (a test that cannot fail proves nothing)."""
    mods = modules()
    graph = import_graph(mods)
    assert "ebyd_bench.benchmark.grid.runner" in graph["ebyd_bench.cli"]  # imported inside _cmd_run
    layers = documented_layers()
    assert layers[0] == ["ebyd_bench.benchmark"] and layers[-1] == ["ebyd_bench"]
