"""The architecture's one rule, checked on every import in worker/:

    faces → flows → systems + store → base

A module may import from its own layer and the layers below it, never above; the two
middle neighbours (systems, store) do not import each other (a client knows nothing of the
database, the store knows nothing of a client); nothing in worker/ imports the tools in
sims/; and each outside system's package imports no other system's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
RANK = {"base": 0, "systems": 1, "store": 1, "flows": 2, "faces": 3}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "worker" and parts[1] in RANK else None


def module_name(path: Path) -> str:
    relative = path.relative_to(WORKER.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative ones resolved, including those
    inside functions and under TYPE_CHECKING (a type is a dependency too)."""
    found: list[tuple[int, str]] = []
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(path: Path) -> list[str]:
    own = layer_of(module_name(path))
    bad = []
    for line, target in imports_of(path):
        where = f"{path.relative_to(WORKER.parent)}:{line} imports {target}"
        if target == "sims" or target.startswith("sims."):
            bad.append(f"{where}: production code never imports the tools")
            continue
        theirs = layer_of(target)
        if own is None or theirs is None:
            continue
        if RANK[theirs] > RANK[own]:
            bad.append(f"{where}: {own} may not import {theirs} (faces → flows → systems + "
                       "store → base)")
        elif RANK[theirs] == RANK[own] and own != theirs:
            bad.append(f"{where}: {own} and {theirs} do not import each other")
        elif own == theirs == "systems":
            mine, other = module_name(path).split(".")[2], target.split(".")[2]
            if mine != other:
                bad.append(f"{where}: one outside system's package imports another's")
    return bad


MODULES = sorted(WORKER.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(WORKER.parent)))
def test_imports_follow_the_layers(path: Path) -> None:
    assert violations(path) == []


def test_every_module_lives_in_a_layer() -> None:
    loose = [str(p.relative_to(WORKER.parent)) for p in MODULES
             if p.parent == WORKER and p.name != "__init__.py"]
    assert loose == [], "every module belongs to base, systems, store, flows or faces"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    fake = WORKER / "base" / "_layer_probe.py"
    try:
        fake.write_text("from worker.flows import sync\n")
        assert violations(fake) and "base may not import flows" in violations(fake)[0]
    finally:
        fake.unlink()
