"""Dependencies point one way (DESIGN.md): the methods, metrics and datasets never import the
loop, the runner or anything else built on top of them, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bench

PACKAGE = Path(bench.__file__).parent
# What sits below everything: plain helpers that import no other part of bench.
BASE = {"bench.errors", "bench.registry", "bench.fileio", "bench.precision", "bench.progress"}
# Per package, the parts of bench its modules may import besides its own and BASE.
ALLOWED = {
    "datasets": set(),
    "metrics": {"bench.datasets"},
    "methods": {"bench.datasets"},
}


def bench_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a bench module in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "bench" or n.startswith("bench.")]
    return found


def top_part(module: str) -> str:
    """``bench.methods`` of ``bench.methods.diffusion.unet``; ``bench.train`` of itself."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_package_imports_nothing_above_it(package):
    allowed = {f"bench.{package}", *BASE, *ALLOWED[package]}
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for line, module in bench_imports(path)
        if top_part(module) not in allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from bench.train import label_columns\n")
    assert bench_imports(module) == [(2, "bench.train")]
