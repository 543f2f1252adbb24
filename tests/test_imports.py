"""The package's import graph: no module imports one that imports it back, and
dependencies point one way (layers/model → optim → train → estimators, distributed, CLI)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "handgrad"


def module_name(path):
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules):
    """Every handgrad module ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("handgrad"):
                continue
            for alias in node.names:  # `from . import train` imports the module train
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("handgrad"))
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph():
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imports_of(path, files) for name, path in files.items()}


def reaches(graph, start, goal):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_module_imports_one_that_imports_it_back(graph):
    # the package itself is every module's parent: importing "handgrad" for __version__
    # is not a dependency on what the package imports
    edges = {m: {t for t in ts if t != "handgrad"} for m, ts in graph.items()}
    cycles = sorted(m for m in edges if m != "handgrad" and reaches(edges, m, m))
    assert cycles == []


@pytest.mark.parametrize("low, high", [
    ("handgrad.model", "handgrad.optim"), ("handgrad.model", "handgrad.train"),
    ("handgrad.optim", "handgrad.train"), ("handgrad.update", "handgrad.train"),
    ("handgrad.train", "handgrad.distributed"), ("handgrad.train", "handgrad.sklearn"),
    ("handgrad.train", "handgrad.cli"), ("handgrad.train", "handgrad.fitting"),
    ("handgrad.distributed", "handgrad.cli"), ("handgrad.datasets.preprocess", "handgrad.distributed"),
])
def test_dependencies_point_one_way(graph, low, high):
    edges = {m: {t for t in ts if t != "handgrad"} for m, ts in graph.items()}
    assert not reaches(edges, low, high) and not any(
        reaches(edges, low, m) for m in edges if m.startswith(high + "."))


def test_no_mpi_outside_distributed():
    """Only the distributed layer (distributed.py and its BLAS-threads helper) imports MPI."""
    import re

    users = sorted(module_name(p) for p in SRC.rglob("*.py")
                   if re.search(r"^\s*(from|import) mpi4py", p.read_text(), re.M))
    assert users == ["handgrad._threads", "handgrad.distributed"]


def test_library_strings_name_no_command_line_flag():
    """Flags are the CLI's words: outside handgrad.cli no message (any string but a
    docstring) names one; library errors carry data and the CLI words them."""
    import re

    offenders = []
    for path in SRC.rglob("*.py"):
        if "cli" in path.relative_to(SRC).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and re.search(r"(^|[\s(])--[a-z][a-z-]+", node.value)):
                offenders.append(f"{path.name}:{node.lineno}: {node.value.strip()[:60]}")
    assert offenders == []
