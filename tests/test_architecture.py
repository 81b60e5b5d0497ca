"""The package's folders are levels, and imports only go down.

    cli  ->  api  ->  tools, plots, sweep  ->  training  ->  config  ->  optim, data  ->  nn  ->  fileio  ->  errors

A module may import its own group and any group on a lower level; never a group
above it, nor one beside it (tools and plots, optim and data know nothing of
each other). Every import counts, also one inside a function. Within a group,
modules must not import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bpcli"

LEVELS = [("version",), ("errors",), ("fileio",), ("nn",), ("optim", "data"), ("config",), ("training",),
          ("tools", "plots", "sweep"), ("api",), ("cli",)]
LEVEL = {group: level for level, groups in enumerate(LEVELS) for group in groups}
LEVEL["bpcli"] = LEVEL["errors"]   # the package itself hands on version.py's __version__ (and hands out bpcli.api's names lazily)
ENTRY_POINTS = {"bpcli.__main__"}   # `python -m bpcli` runs the CLI: the one module above cli/
# `bpcli.train` is bpcli.api.train, imported by the package's __getattr__ on first use (never while
# bpcli itself is imported), so this one edge is neither an upward import nor part of a cycle.
FACADE = {"bpcli": {"bpcli.api"}}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every module of `modules` that a module's source imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules  # from bpcli.nn import layers
            found |= submodules or {base}
    return found & modules


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def group_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bpcli"


def read_package(package: Path) -> dict[str, set[str]]:
    """{module: the bpcli modules it imports} for every module of the package."""
    paths = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    return {name: imported_modules(path.read_text(), name, path.name == "__init__.py", set(paths))
            - FACADE.get(name, set()) for name, path in paths.items()}


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b (why)' for every import that goes up or sideways between groups."""
    problems = []
    for module, imports in sorted(graph.items()):
        if module in ENTRY_POINTS:
            continue
        mine = group_of(module)
        for target in sorted(imports):
            theirs = group_of(target)
            if theirs == mine or theirs == "bpcli" and target == "bpcli":
                continue
            if LEVEL[theirs] > LEVEL[mine]:
                problems.append(f"{module} -> {target} (up: {mine} is below {theirs})")
            elif LEVEL[theirs] == LEVEL[mine]:
                problems.append(f"{module} -> {target} (sideways: {mine} and {theirs} share a level)")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between modules (each found once, from its smallest module)."""
    found = []

    def visit(start, module, path):
        for target in sorted(graph.get(module, ())):
            if target == start:
                found.append([*path, start])
            elif target not in path and target > start:
                visit(start, target, [*path, target])

    for start in sorted(graph):
        visit(start, start, [start])
    return found


# -- the package -------------------------------------------------------------------------------------

def test_every_group_has_a_level():
    groups = {group_of(m) for m in read_package(PACKAGE)} - {"bpcli", "__main__"}
    assert groups <= set(LEVEL), f"groups without a level: {groups - set(LEVEL)}"


def test_imports_only_go_down():
    assert wrong_way_imports(read_package(PACKAGE)) == []


def test_no_import_cycles():
    assert cycles(read_package(PACKAGE)) == []


def test_only_the_entry_point_imports_the_cli():
    importers = {m for m, imports in read_package(PACKAGE).items()
                 if any(group_of(t) == "cli" for t in imports) and group_of(m) != "cli"}
    assert importers == ENTRY_POINTS


# -- the checker itself: it must see what it is meant to catch ---------------------------------------

@pytest.fixture
def toy_package(tmp_path):
    """A small bpcli-shaped package to plant bad imports in."""
    root = tmp_path / "bpcli"
    for group in ("nn", "training", "tools", "plots"):
        (root / group).mkdir(parents=True)
        (root / group / "__init__.py").write_text("")
    (root / "__init__.py").write_text("__version__ = '0'\n")
    (root / "errors.py").write_text("")
    (root / "nn" / "layers.py").write_text("from bpcli.errors import *\n")
    (root / "training" / "trainer.py").write_text("from bpcli.nn.layers import Dense\nfrom bpcli import __version__\n")
    (root / "tools" / "explain.py").write_text("from ..training import trainer\n")
    (root / "plots" / "curves.py").write_text("import numpy\n")
    return root


def test_checker_accepts_a_package_whose_imports_go_down(toy_package):
    graph = read_package(toy_package)
    assert graph["bpcli.tools.explain"] == {"bpcli.training.trainer"}
    assert wrong_way_imports(graph) == [] and cycles(graph) == []


def test_checker_catches_an_upward_import_even_inside_a_function(toy_package):
    (toy_package / "nn" / "layers.py").write_text("def f():\n    from bpcli.training.trainer import Trainer\n")
    assert wrong_way_imports(read_package(toy_package)) == [
        "bpcli.nn.layers -> bpcli.training.trainer (up: nn is below training)"]


def test_checker_catches_a_sideways_import(toy_package):
    (toy_package / "plots" / "curves.py").write_text("from bpcli.tools import explain\n")
    assert wrong_way_imports(read_package(toy_package)) == [
        "bpcli.plots.curves -> bpcli.tools.explain (sideways: plots and tools share a level)"]


def test_checker_catches_a_cycle_within_a_group(toy_package):
    (toy_package / "nn" / "model.py").write_text("from .layers import Dense\n")
    (toy_package / "nn" / "layers.py").write_text("from . import model\n")
    assert cycles(read_package(toy_package)) == [["bpcli.nn.layers", "bpcli.nn.model", "bpcli.nn.layers"]]
