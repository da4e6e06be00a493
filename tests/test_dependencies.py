"""Every third-party package the project imports is declared in pyproject.toml (and pinned in constraints.txt)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("image2reg", "notebooks", "benchmarks", "runbook.py")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def imported_modules(paths) -> dict[str, set[str]]:
    """Top-level module -> the files that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared_and_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for extra in project.get("optional-dependencies", {}).values() for r in extra}
    pinned = {_name(line) for line in (REPO / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    files = [p for source in SOURCES for p in ((REPO / source).rglob("*.py") if (REPO / source).is_dir()
                                               else [REPO / source])]
    distributions = packages_distributions()
    undeclared = {}
    for module, where in imported_modules(files).items():
        if module in sys.stdlib_module_names or module in ("image2reg", "__future__"):
            continue
        if all((REPO / path).with_name(f"{module}.py").is_file() for path in where):
            continue  # a script's sibling (benchmarks/pretraining.py imports benchmarks/training_throughput.py)
        names = {_name(d) for d in distributions.get(module, [module])}
        if not names & (declared | optional):
            undeclared[module] = sorted(where)[:3]
        elif names & declared:  # optional extras (cellpose) are the user's to pin
            assert names & pinned, f"{module} is declared but not pinned in constraints.txt"
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
