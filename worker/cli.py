"""The `pointsync` operator CLI."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.settings import ConfigError, exit_on_config_error

cli = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="pointsync: Treazure → Engage point sync, operated from a terminal.")
db_cli = typer.Typer(no_args_is_help=True, help="The worker's own database.")
cli.add_typer(db_cli, name="db")
console = Console()

RUN_COLUMNS = ("id", "status", "window_from", "window_to", "duration_seconds", "fetched",
               "unique_contacts", "unchanged", "stale", "pushed", "rejected", "error")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _cell(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%SZ"))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def runs_table(runs: list[dict[str, Any]], title: str = "sync runs") -> Table:
    table = Table(title=title)
    for column in RUN_COLUMNS:
        table.add_column(column.replace("_seconds", " s").replace("_", " "))
    for run in runs:
        table.add_row(*(_cell(run.get(column))[:60] for column in RUN_COLUMNS))
    return table


def run_summary(run: dict[str, Any], title: str = "sync run") -> Table:
    """One run as a two-column table: readable in any terminal width."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for column in RUN_COLUMNS:
        if run.get(column) is not None:
            table.add_row(column.replace("_seconds", " (s)").replace("_", " "),
                          _cell(run.get(column)))
    return table


@cli.command()
def status(
    limit: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent sync runs and the watermark (where the next scheduled window starts)."""
    from worker.runtime import prepare_store
    from worker.settings import get_core_settings

    store = prepare_store(get_core_settings().DATABASE_URL)
    runs = store.recent_runs(limit)
    watermark = store.watermark()
    if as_json:
        print(json.dumps({"watermark": _jsonable(watermark),
                          "runs": [{k: _jsonable(v) for k, v in r.items()} for r in runs]}))
        return
    console.print(f"watermark: {watermark or 'none yet (the first run covers the last 2 h)'}")
    console.print(runs_table(runs))


@cli.command()
def sync(
    since: Annotated[str | None, typer.Option(help="Window start, ISO-8601 with timezone.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO-8601 with timezone.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue one balance sync run (pointsync.sync_balances)."""
    from worker.sync import InvalidArgument, parse_time_argument

    try:
        parse_time_argument("since", since)
        parse_time_argument("until", until)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    from worker.celery import app

    kwargs = {k: v for k, v in {"since": since, "until": until}.items() if v}
    result = app.send_task("pointsync.sync_balances", kwargs=kwargs)
    if not wait:
        print(json.dumps({"task_id": result.id}) if as_json else f"enqueued task {result.id}")
        return
    summary = result.get(propagate=False)
    if as_json:
        print(json.dumps(summary if isinstance(summary, dict) else {"error": str(summary)}))
    elif isinstance(summary, dict):
        console.print(run_summary({**summary, "id": summary.get("run_id")}))
    else:
        console.print(f"[red]sync failed:[/red] {summary}")
    if not isinstance(summary, dict) or summary.get("status") == "failed":
        raise typer.Exit(1)


@cli.command()
def sim(
    host: str = "127.0.0.1",
    treazure_port: int = 8101,
    engage_port: int = 8102,
    seed_contacts: Annotated[int, typer.Option(help="Accounts to create at start.")] = 0,
    seed_changed: Annotated[int | None, typer.Option(help="How many changed lately.")] = None,
) -> None:
    """Run the Treazure and Engage simulators (demo, tests, benchmark)."""
    from worker.sim.server import run

    run(host, treazure_port, engage_port, seed_contacts, seed_changed)


@cli.command()
def demo(
    contacts: Annotated[int, typer.Option(help="Contacts seeded in the simulators.")] = 50_000,
) -> None:
    """The main job end to end on embedded defaults: Redis, simulators, worker, beat, a sync."""
    from worker.demo import run_demo

    raise typer.Exit(run_demo(contacts))


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest migration."""
    from worker.runtime import prepare_store
    from worker.settings import get_core_settings

    prepare_store(get_core_settings().DATABASE_URL)
    console.print("database schema is up to date")


def main() -> None:
    try:
        cli()
    except ConfigError as exc:
        exit_on_config_error(exc)


if __name__ == "__main__":
    sys.exit(main())
