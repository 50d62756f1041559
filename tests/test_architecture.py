"""The layers of docs/architecture.md, as import-linter contracts, and no import cycle at all."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    """pyproject.toml's contracts: cli > parallel | inspection > files > noise, a pure core."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[test]')")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (Tarjan), larger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in graph.modules:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_two_modules_import_each_other():
    """Counting imports inside functions and the packages' __init__ modules."""
    graph = grimp.build_graph("mwr_dask", include_external_packages=False)
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert strongly_connected(graph) == [["p.a", "p.b", "p.c"]]


#: Names with a leading underscore that their library documents as public.
PUBLIC = {"_exit"}  # os._exit: https://docs.python.org/3/library/os.html#os._exit


def private_names_of_other_packages(source: str) -> list[str]:
    """``_name``s (not dunders) imported from, or looked up on, a module of another package."""
    tree = ast.parse(source)
    modules: set[str] = set()  # names bound to other packages' modules
    found = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("mwr_dask"):
                    found += [alias.name] * any(map(private, alias.name.split(".")))
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("mwr_dask") or node.module == "__future__":
                continue
            parts = node.module.split(".")
            found += [node.module] * any(map(private, parts))
            found += [f"{node.module}.{a.name}" for a in node.names if private(a.name)]
            modules.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules and node.attr not in PUBLIC:
                found.append(f"{ast.unparse(node.value)}.{node.attr}")
    return found


def test_no_private_name_of_another_package_is_used():
    """Issue 18: distributed, dask-jobqueue, mrcfile, typer (and the rest) by public names only."""
    used = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "mwr_dask").rglob("*.py"))
        if (names := private_names_of_other_packages(path.read_text()))
    }
    assert used == {}
    # the check finds what it looks for
    assert private_names_of_other_packages(
        "import mrcfile\nfrom distributed.utils import _x\nimport numpy._core as c\n"
        "mrcfile.utils._y\nfrom dask_jobqueue.core import Job\nJob._z\n"
    ) == ["distributed.utils._x", "numpy._core", "mrcfile.utils._y", "Job._z"]
