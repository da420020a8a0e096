"""Every module the package (and its tests) imports comes from a declared distribution.

A fresh ``pip install .`` once failed where CI passed: the code imported
``click``, which typer had stopped installing, and CI's interpreter happened
to have it. Here each top-level import of ``p2pvpn/`` must be provided by a
distribution named in ``[project] dependencies``, and each import of
``tests/`` by those or the ``test`` extra. Transitive luck does not count.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]) for r in requirements}


def top_level_imports(tree: Path) -> dict[str, set[str]]:
    """Absolute third-party top-level modules imported under ``tree`` -> files importing them.

    ``import_module("x")`` and ``__import__("x")`` with a literal name count
    too: an import by name is still an import.
    """
    local = {p.stem for p in tree.rglob("*.py")} | {p.name for p in tree.rglob("*") if p.is_dir()} | {tree.name}
    found: dict[str, set[str]] = {}
    for path in tree.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                    modules = [node.args[0].value]
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "p2pvpn" or top in local:
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def undeclared(tree: Path, declared: set[str]) -> list[str]:
    owners = packages_distributions()
    problems = []
    for module, files in sorted(top_level_imports(tree).items()):
        provided_by = {_norm(d) for d in owners.get(module, [])}
        if not provided_by & declared:
            who = ", ".join(sorted(provided_by)) or "no installed distribution"
            problems.append(f"{module} (from {who}) imported by {', '.join(sorted(files))}")
    return problems


def test_the_package_imports_only_declared_dependencies() -> None:
    declared = _names(PYPROJECT["project"]["dependencies"])
    assert undeclared(ROOT / "p2pvpn", declared) == []


def test_the_tests_import_only_declared_dependencies() -> None:
    declared = _names(PYPROJECT["project"]["dependencies"]) | _names(PYPROJECT["project"]["optional-dependencies"]["test"])
    assert undeclared(ROOT / "tests", declared) == []


def test_the_check_notices_an_undeclared_import(tmp_path: Path) -> None:
    """The checker itself: a module importing click with click undeclared is reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("import trio\nfrom click import echo\n__import__('rich')\nimport json\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = undeclared(pkg, {"trio"})
    finally:
        ROOT = saved
    assert [p.split()[0] for p in problems] == ["click", "rich"]


def test_every_declared_dependency_is_used() -> None:
    """A declared distribution that nothing imports is dead weight (prometheus-client was one)."""
    owners = packages_distributions()
    imported = {_norm(d) for m in top_level_imports(ROOT / "p2pvpn") for d in owners.get(m, [])}
    unused = _names(PYPROJECT["project"]["dependencies"]) - imported
    assert unused == set()
