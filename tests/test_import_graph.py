"""The project's import graph, read from source with `ast` (nothing is imported).

It enforces DESIGN's package table: no import cycles between the project's modules;
`schemas` imports neither torch nor ray; `curation` imports neither ray nor `model` /
`pipelines`; `model` imports ray only inside functions and never imports `pipelines`.
Project imports sit at module top, so the graph a reader sees is the whole graph; a
function-local import is allowed only for third-party packages (heavy or optional ones
that should load lazily).

`python tests/test_import_graph.py` prints the graph package -> package.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "curation", "pipelines", "model")


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is and whether it runs at import time."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted (resolved against the project's modules)
    line: int
    top_level: bool  # not inside a function (class bodies and `if` blocks count as top level)


def module_name(path: Path, root: Path = ROOT) -> str:
    """`curation/clips/scan.py` -> `curation.clips.scan`; a package's `__init__` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    return {
        module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _resolve(name: str, modules: set[str]) -> str:
    """The longest project module that `name` is or lies in; the top package for others."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return parts[0]


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [_resolve(alias.name, modules) for alias in node.names]
    if node.level:  # relative import: resolve against the importing module's package
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    # `from pkg import mod` imports the submodule when one exists, else a name from `pkg`.
    return [
        _resolve(f"{stem}.{alias.name}", modules) if f"{stem}.{alias.name}" in modules else _resolve(stem, modules)
        for alias in node.names
    ]


def imports(root: Path = ROOT) -> list[Import]:
    """Every import statement in the project, skipping `if TYPE_CHECKING:` blocks."""
    files = project_files(root)
    modules = set(files)
    found: list[Import] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # annotations only: never executed
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, name, is_package, modules):
                        found.append(Import(name, target, child.lineno, not in_function))
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return found


def package_of(module: str) -> str:
    return module.split(".")[0]


def project_edges(found: list[Import]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of the file)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in found:
        if package_of(edge.target) in PACKAGES and edge.target != edge.source:
            graph[edge.source].add(edge.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            connect(node)
    return found


def violations(found: list[Import]) -> list[str]:
    """Breaches of DESIGN's package table and of "project imports at module top"."""
    bad = []
    for edge in found:
        source, target = package_of(edge.source), package_of(edge.target)
        where = f"{edge.source}:{edge.line} imports {edge.target}"
        if target in PACKAGES and not edge.top_level:
            bad.append(f"{where} inside a function (project imports belong at module top)")
        if source == "schemas" and target in ("torch", "ray", "model", "curation", "pipelines"):
            bad.append(f"{where} (schemas imports no torch, ray or project code above it)")
        if source == "curation" and target in ("ray", "model", "pipelines"):
            bad.append(f"{where} (curation imports no ray, model or pipelines)")
        if source == "model" and target == "pipelines":
            bad.append(f"{where} (model never imports pipelines)")
        if source == "model" and target == "ray" and edge.top_level:
            bad.append(f"{where} at module level (model imports ray only where it is used)")
    return list(dict.fromkeys(bad))  # one line per statement, however many names it imports


def package_graph(found: list[Import]) -> dict[str, set[str]]:
    """Package -> the other project packages it imports."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for edge in found:
        source, target = package_of(edge.source), package_of(edge.target)
        if target in PACKAGES and target != source:
            graph[source].add(target)
    return graph


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return imports()


def test_no_import_cycles(project_imports):
    found = cycles(project_edges(project_imports))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_design_package_table_holds(project_imports):
    bad = violations(project_imports)
    assert not bad, "\n".join(bad)


def test_package_graph_is_layered(project_imports):
    # schemas at the bottom, then curation, then model, then pipelines on top.
    graph = package_graph(project_imports)
    assert graph["schemas"] == set()
    assert graph["curation"] <= {"schemas"}
    assert graph["model"] <= {"schemas", "curation"}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checks_catch_a_planted_cycle_and_breaches(tmp_path):
    """The checks can fail: a tree with a function-local cycle and each kind of breach."""
    _write(
        tmp_path,
        {
            "schemas/__init__.py": "",
            "schemas/io.py": "import torch\n",
            "curation/__init__.py": "",
            "curation/a.py": "from curation import b\n",
            "curation/b.py": "def f():\n    from curation.a import thing\n",
            "curation/c.py": "from model.x import y\nimport ray\n",
            "pipelines/__init__.py": "",
            "model/__init__.py": "",
            "model/x.py": "import ray\nfrom pipelines import wiring\ny = 1\n",
            "model/lazy.py": "def go():\n    import ray\n    import transformers\n",
        },
    )
    found = imports(tmp_path)
    assert cycles(project_edges(found)) == [["curation.a", "curation.b"]]
    bad = "\n".join(violations(found))
    for expected in (
        "curation.b:2 imports curation.a inside a function",
        "schemas.io:1 imports torch",
        "curation.c:1 imports model.x",
        "curation.c:2 imports ray",
        "model.x:1 imports ray at module level",
        "model.x:2 imports pipelines",
    ):
        assert expected in bad
    assert "model.lazy" not in bad  # lazy third-party imports are allowed
    assert package_graph(found)["curation"] == {"model"}


def subpackage_graph(found: list[Import]) -> dict[str, set[str]]:
    """The same one level down: ``curation.clips``, ``model.train``, ... (top modules as their package)."""
    packages = {module.rsplit(".", 1)[0] for module in project_files() if module.count(".") >= 2}

    def group(module: str) -> str:
        parent = module.rsplit(".", 1)[0]
        return module if module in packages else parent if parent in packages else package_of(module)

    graph: dict[str, set[str]] = defaultdict(set)
    for edge in found:
        if package_of(edge.target) in PACKAGES and group(edge.target) != group(edge.source):
            graph[group(edge.source)].add(group(edge.target))
    return graph


def main(argv: list[str] | None = None) -> int:
    """``python tests/test_import_graph.py``: the graph package -> package, then one level down."""
    argparse.ArgumentParser(description=main.__doc__).parse_args(argv)
    found = imports()
    for package, targets in package_graph(found).items():
        print(f"{package} -> {', '.join(sorted(targets)) or '(nothing)'}")
    print()
    for package, targets in sorted(subpackage_graph(found).items()):
        print(f"{package} -> {', '.join(sorted(targets))}")
    for component in cycles(project_edges(found)):
        print("cycle:", " <-> ".join(component))
    return 0


if __name__ == "__main__":
    sys.exit(main())
