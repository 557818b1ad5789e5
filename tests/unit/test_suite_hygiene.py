"""The suite keeps its own rules: shared helpers live in tests/support, never in a conftest
or another test module, and every test module that starts a process carries the
`integration` marker (so `-m integration` selects exactly the tests that need real parts)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in TESTS.rglob("*.py") if "support" not in p.relative_to(TESTS).parts)
TEST_MODULES = [p for p in MODULES if p.name.startswith("test_")]

# What starting a process looks like in a test module: a subprocess, a Celery process from
# the harness, the simulators, or a fixture that starts one of those.
PROCESS_SIGNS = re.compile(
    r"\b(subprocess|start_celery|start_simulators|running_sim|start_worker|start_web|sim_urls)"
    r"\b|\bsims: |\bsim: Sim\b|\bsim,")


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_import_from_a_conftest_or_a_test_module(path: Path) -> None:
    bad = [name for name in imported_modules(path) if name.startswith("tests.")
           and name.split(".")[-1] in {"conftest"} | {p.stem for p in TEST_MODULES}]
    # A bare `from conftest import …` or `from test_x import …` (rootdir-relative) too.
    bad += [name for name in imported_modules(path)
            if name == "conftest" or name in {p.stem for p in TEST_MODULES}]
    assert not bad, f"{path.name} imports {bad}: move what it needs to tests/support"


def test_no_helper_module_outside_support() -> None:
    helpers = [p for p in MODULES
               if p.name not in ("conftest.py", "__init__.py") and not p.name.startswith("test_")]
    assert not helpers, f"helper modules belong in tests/support: {helpers}"


def starts_processes(path: Path) -> bool:
    text = path.read_text()
    return PROCESS_SIGNS.search(text) is not None


@pytest.mark.parametrize("path", [p for p in TEST_MODULES if starts_processes(p)],
                         ids=lambda p: str(p.relative_to(TESTS)))
def test_modules_that_start_processes_are_marked_integration(path: Path) -> None:
    assert "pytestmark = pytest.mark.integration" in path.read_text(), \
        f"{path.name} starts processes but lacks `pytestmark = pytest.mark.integration`"


def test_the_rule_catches_an_unmarked_process_test(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("import subprocess\n\ndef test_it():\n    subprocess.run(['true'])\n")
    assert starts_processes(module)
    assert "pytest.mark.integration" not in module.read_text()
