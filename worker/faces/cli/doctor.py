"""`pointsync doctor`: runs every check (doctor_checks) and shows what is wrong and the fix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from worker.faces.cli import doctor_checks as checks
from worker.faces.cli.output import console

STATUS_STYLE = {checks.OK: "[green]ok[/green]", checks.WARN: "[yellow]warn[/yellow]",
                checks.FAIL: "[red]FAIL[/red]", checks.SKIP: "[dim]skip[/dim]"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable results.")] = False,
) -> None:
    """Check the configuration, Redis, the database, Treazure (token), Engage (apikey),
    Toggle, the relays' destinations (Atreemo, Contlo) and backlog, the sync lag and the
    workers; say what is wrong and how to fix it. Exit 1 on a failure."""
    results = checks.run_all()
    if as_json:
        print(json.dumps(checks.as_dicts(results)))
    else:
        table = Table(title="pointsync doctor")
        for column in ("check", "", "finding", "how to fix"):
            table.add_column(column, overflow="fold")
        for check in results:
            table.add_row(check.name, STATUS_STYLE[check.status], Text(check.detail),
                          Text(check.fix))
        console.print(table)
    if any(check.status == checks.FAIL for check in results):
        raise typer.Exit(1)
