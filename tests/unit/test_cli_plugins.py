"""Commands from outside worker/ join `pointsync` through the entry-point group
`pointsync.cli`: the tools' package adds `sim` and `demo`; an image without it (the
Dockerfile copies worker/ only) simply lacks them."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from worker.faces.cli import app as cli_app
from worker.faces.cli.app import add_plugins, cli


@pytest.mark.parametrize(("command", "says"), [
    ("sim", "Run the Treazure, Engage and Toggle simulators"),
    ("demo", "The main job end to end on embedded defaults"),
])
def test_the_tools_commands_come_from_their_plugin(command: str, says: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])

    assert result.exit_code == 0, result.output
    assert says in result.stdout


def plugins(monkeypatch: pytest.MonkeyPatch, value: str) -> typer.Typer:
    entry = EntryPoint(name="extra", value=value, group=cli_app.PLUGIN_GROUP)
    monkeypatch.setattr(cli_app, "entry_points", lambda group: [entry])
    root = typer.Typer()
    add_plugins(root)
    return root


def test_a_plugin_whose_module_is_not_installed_adds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert plugins(monkeypatch, "not_installed_tools.cli:register").registered_commands == []


def test_a_broken_plugin_is_not_hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "broken_tools.py").write_text("import a_dependency_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ModuleNotFoundError, match="a_dependency_nobody_installed"):
        plugins(monkeypatch, "broken_tools:register")


def test_the_installed_plugin_adds_its_commands_to_the_root() -> None:
    root = typer.Typer()
    add_plugins(root)

    assert [c.callback.__name__ for c in root.registered_commands if c.callback] == [
        "sim", "demo"]
