"""The `pointsync` operator CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from worker.base.settings import ConfigError, exit_on_config_error
from worker.faces.cli import operations as operations_cli

cli = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="pointsync: Treazure → Engage point sync, operated from a terminal.")
db_cli = typer.Typer(no_args_is_help=True, help="The worker's own database.")
cli.add_typer(db_cli, name="db")
points_cli = typer.Typer(no_args_is_help=True,
                         help="Point transactions: book by hand, list failures, replay.")
cli.add_typer(points_cli, name="points")
# soft_wrap: a message stays one line in any terminal (scripts and logs grep it).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

RUN_COLUMNS = ("id", "kind", "status", "window_from", "window_to", "duration_seconds",
               "fetched", "unique_contacts", "unchanged", "stale", "pushed", "rejected", "error")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _cell(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%SZ"))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


# The table of recent runs: what fits in 100 columns; `--json` and the run summary have all.
RUN_TABLE_COLUMNS = (("id", "id"), ("kind", "kind"), ("status", "status"),
                     ("window", "window (UTC)"), ("duration_seconds", "s"), ("fetched", "read"),
                     ("pushed", "pushed"), ("unchanged", "same"), ("stale", "stale"),
                     ("rejected", "refused"), ("error", "error"))


def _short_cell(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%m-%d %H:%M"))
    if isinstance(value, float):
        return f"{value:,.1f}"
    return _cell(value)


def runs_table(runs: list[dict[str, Any]], title: str = "sync runs") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column, header in RUN_TABLE_COLUMNS:
        table.add_column(header, overflow="fold", no_wrap=column != "error",
                         justify="left" if column in ("kind", "status", "error") else "right")
    for run in runs:
        cells = {**run, "window": _window_text(run.get("window_from"), run.get("window_to"))}
        table.add_row(*(_short_cell(cells.get(column))[:80] for column, _ in RUN_TABLE_COLUMNS))
    return table


def _window_text(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "—"  # a heal pushes given contacts, it reads no window
    first = "all time" if start.year < 2000 else _short_cell(start)
    return f"{first} → {_short_cell(end)}"


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


def _age_text(seconds: float | None) -> str:
    from worker.faces.cli.doctor import age_text

    return "no scheduled sync has succeeded yet" if seconds is None else age_text(seconds)


def _queue_state(redis_url: str) -> dict[str, Any]:
    """Waiting messages per queue and those handed to workers, or why they are unknown."""
    import redis

    from worker.faces.celery.queues import queue_depths, unacked_count

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return {"waiting": queue_depths(client), "unacked": unacked_count(client)}
    except redis.RedisError as exc:
        return {"error": f"Redis does not answer: {type(exc).__name__}"}
    finally:
        client.close()


@cli.command()
def status(
    limit: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent sync runs, the lag (age of the watermark), point transactions by state and
    the failed ones, and the Celery queue depths."""
    from worker.base.settings import get_core_settings
    from worker.faces.runtime import prepare_store
    from worker.store.database import utcnow
    from worker.store.ledger import Ledger

    settings = get_core_settings()
    store = prepare_store(settings.DATABASE_URL)
    runs = store.recent_runs(limit)
    watermark = store.watermark()
    lag = None if watermark is None else round((utcnow() - watermark).total_seconds(), 1)
    ledger = Ledger(store)
    states = {state: 0 for state in ("received", "booked", "applied", "failed")}
    states.update(ledger.counts_by_state())
    failed = ledger.listing("failed", 5) if states["failed"] else []
    queues = _queue_state(settings.REDIS_URL)
    if as_json:
        print(json.dumps({
            "watermark": _jsonable(watermark), "lag_seconds": lag,
            "runs": [{k: _jsonable(v) for k, v in r.items()} for r in runs],
            "point_transactions": states,
            "failed_transactions": [{k: _jsonable(v) for k, v in _point_dict(r).items()}
                                    for r in failed],
            "queues": queues}))
        return
    console.print(f"lag: {_age_text(lag)}"
                  + (f" (watermark {watermark:%Y-%m-%d %H:%M:%SZ})" if watermark else ""),
                  highlight=False)
    console.print(runs_table(runs))
    console.print("point transactions: " + ", ".join(f"{k} {v:,}" for k, v in states.items()),
                  highlight=False)
    if failed:
        console.print(points_table(failed, f"latest failed transactions ({states['failed']:,} "
                                   "in all; pointsync points failed)",
                                   ("reference", "contact_id", "amount", "updated_at",
                                    "reason")))
    if "error" in queues:
        console.print(f"queues: {queues['error']}", highlight=False)
    else:
        waiting = ", ".join(f"{name} {depth:,}" for name, depth in queues["waiting"].items())
        console.print(f"queues: waiting {waiting}; handed to workers {queues['unacked']:,}",
                      highlight=False)


def _follow_run(result: Any, store: Any, task_id: str, timeout: float | None) -> Any:
    """A live progress bar fed by the run's row (updated every ~2 s by the worker) until
    the task has finished; returns the task's result (or the exception it raised)."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from worker.faces.cli.operations import counts_text, progress_bar
    from worker.flows.sync import Counts
    from worker.store.database import RUN_COUNTS

    deadline = None if timeout is None else time.monotonic() + timeout
    with progress_bar() as bar:
        task = bar.add_task("waiting for a worker", total=None, counts="")

        def show(run: dict[str, Any] | None) -> None:
            if run is not None:
                bar.update(task, description=f"sync run {run['id']} {run['status']}",
                           counts=counts_text(Counts(**{k: run[k] for k in RUN_COUNTS})))

        while not result.ready():
            if deadline is not None and time.monotonic() > deadline:
                raise typer.Exit(2)
            show(store.run_for_task(task_id))
            # Returns as soon as the task ends; else the bar is refreshed every 0.5 s.
            with contextlib.suppress(CeleryTimeout):
                result.get(timeout=0.5, propagate=False)
        show(store.run_for_task(task_id))
    return result.get(propagate=False)


@cli.command()
def sync(
    since: Annotated[str | None, typer.Option(help="Window start, ISO-8601 with timezone.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO-8601 with timezone.")] = None,
    wait: Annotated[bool, typer.Option(
        help="Follow the run with a live progress bar and print its summary.")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up waiting after this many seconds (exit 2).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue one balance sync run (pointsync.sync_balances)."""
    from worker.flows.sync import InvalidArgument, parse_time_argument

    try:
        parse_time_argument("since", since)
        parse_time_argument("until", until)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    from worker.faces.celery.app import app

    kwargs = {k: v for k, v in {"since": since, "until": until}.items() if v}
    result = app.send_task("pointsync.sync_balances", kwargs=kwargs)
    if not wait:
        print(json.dumps({"task_id": result.id}) if as_json else f"enqueued task {result.id}")
        return
    from worker.base.settings import get_core_settings
    from worker.faces.runtime import prepare_store

    store = prepare_store(get_core_settings().DATABASE_URL)
    try:
        summary = _follow_run(result, store, result.id, timeout)
    except typer.Exit:
        err_console.print(f"still running after {timeout:g} s (task {result.id}); "
                                   "pointsync status shows it")
        raise
    if as_json:
        print(json.dumps(summary if isinstance(summary, dict) else {"error": str(summary)}))
    elif isinstance(summary, dict):
        console.print(run_summary({**summary, "id": summary.get("run_id")}))
    else:
        console.print(f"[red]sync failed:[/red] {summary}")
    if not isinstance(summary, dict) or summary.get("status") not in ("succeeded",):
        raise typer.Exit(1)


POINT_COLUMNS = ("reference", "state", "contact_id", "amount", "balance", "attempts", "source",
                 "updated_at", "reason")


def _point_dict(row: Any) -> dict[str, Any]:
    from worker.flows.points import decimal_text

    return {"reference": row.reference, "state": row.state, "contact_id": row.contact_id,
            "amount": decimal_text(row.amount_cents), "description": row.description,
            "balance": decimal_text(row.balance_cents), "attempts": row.attempts,
            "uncertain": row.uncertain, "source": row.source, "reason": row.reason,
            "created_at": row.created_at, "updated_at": row.updated_at,
            "booked_at": row.booked_at, "applied_at": row.applied_at}


def points_table(
    rows: list[Any], title: str, columns: tuple[str, ...] = POINT_COLUMNS
) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        data = _point_dict(row)
        table.add_row(*(_cell(data[column]) for column in columns))
    return table


def _print_point(row: Any, as_json: bool) -> None:
    data = _point_dict(row)
    if as_json:
        print(json.dumps({k: _jsonable(v) for k, v in data.items()}))
        return
    table = Table(title=f"transaction {row.reference}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if value is not None:
            table.add_row(key.replace("_", " "), _cell(value))
    console.print(table)


def _ledger() -> Any:
    from worker.base.settings import get_core_settings
    from worker.faces.runtime import prepare_store
    from worker.store.ledger import Ledger

    return Ledger(prepare_store(get_core_settings().DATABASE_URL))


def _enqueue_and_follow(ledger: Any, row: Any, wait: bool, timeout: float, as_json: bool) -> None:
    """Hand the row to the workers; with `wait`, follow it until it settles."""
    from worker.faces.celery.app import app
    from worker.faces.celery.tasks import task_arguments

    try:
        # Followed in the ledger, not through a result: none is stored.
        app.send_task("pointsync.add_points", kwargs=task_arguments(row), ignore_result=True)
    except Exception as exc:  # recorded all the same: the sweep finishes it
        console.print(f"[yellow]could not enqueue ({type(exc).__name__}); the sweep will "
                      f"finish {row.reference}[/yellow]", highlight=False)
    deadline = time.monotonic() + timeout
    while wait and row.state in ("received", "booked") and time.monotonic() < deadline:
        time.sleep(0.2)
        row = ledger.get(row.reference)
    _print_point(row, as_json)
    if row.state == "failed":
        raise typer.Exit(1)
    if wait and row.state != "applied":
        console.print(f"still {row.state} after {timeout:g} s; the workers go on with it")
        raise typer.Exit(2)


# ignore_unknown_options: a redemption's amount (-10.50) is an argument, not an option.
@points_cli.command("add", context_settings={"ignore_unknown_options": True})
def points_add(
    contact_id: Annotated[str, typer.Argument(help="Engage contact id (Treazure account).")],
    amount: Annotated[str, typer.Argument(help="Points, e.g. 25 or -10.50 (a redemption).")],
    description: Annotated[str, typer.Option(help="1 to 100 characters, shown in Treazure.")],
    reference: Annotated[str | None, typer.Option(
        help="Idempotency key; the same one again books nothing. Made up when absent.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until it is applied in Engage.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Book points by hand: recorded, booked in Treazure once, set in Engage."""
    from worker.base.arguments import InvalidArgument
    from worker.base.point_request import validate_request
    from worker.flows.points import record

    ledger = _ledger()
    try:
        request = validate_request(contact_id, amount, description, reference)
        row, created = record(ledger.store, request, "cli")
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if not created:
        console.print(f"reference {request.reference} was recorded before: nothing new is booked")
    if row.final:
        _print_point(row, as_json)
        raise typer.Exit(1 if row.state == "failed" else 0)
    _enqueue_and_follow(ledger, row, wait, timeout, as_json)


@points_cli.command("failed")
def points_failed(
    limit: Annotated[int, typer.Option(help="How many to show, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Transactions that ended failed, with the reason (replay them with `points replay`)."""
    rows = _ledger().listing("failed", limit)
    if as_json:
        print(json.dumps([{k: _jsonable(v) for k, v in _point_dict(r).items()} for r in rows]))
        return
    console.print(points_table(rows, f"failed transactions ({len(rows)} shown)"))


@points_cli.command("list")
def points_list(
    state: Annotated[str | None, typer.Option(
        help="Only this state: received, booked, applied or failed.")] = None,
    limit: Annotated[int, typer.Option(help="How many to show, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent transactions, newest first."""
    rows = _ledger().listing(state, limit)
    if as_json:
        print(json.dumps([{k: _jsonable(v) for k, v in _point_dict(r).items()} for r in rows]))
        return
    console.print(points_table(rows, "transactions"))


@points_cli.command("show")
def points_show(
    reference: Annotated[str, typer.Argument(help="The transaction's reference.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One transaction, every field."""
    row = _ledger().get(reference)
    if row is None:
        console.print(f"no transaction with reference {reference}")
        raise typer.Exit(1)
    _print_point(row, as_json)


@points_cli.command("replay")
def points_replay(
    reference: Annotated[str, typer.Argument(help="The failed transaction's reference.")],
    wait: Annotated[bool, typer.Option(help="Wait until it is applied in Engage.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Try a failed transaction again. One Treazure booked already only goes to Engage
    again; one it did not book is booked (after the usual history check)."""
    ledger = _ledger()
    row = ledger.get(reference)
    if row is None:
        console.print(f"no transaction with reference {reference}")
        raise typer.Exit(1)
    if row.state != "failed":
        console.print(f"{reference} is {row.state}, not failed: nothing to replay")
        raise typer.Exit(1)
    if row.amount_cents is None:
        console.print(f"{reference} was refused as invalid ({row.reason}); "
                      "it cannot be booked as it stands")
        raise typer.Exit(1)
    _enqueue_and_follow(ledger, ledger.reopen(reference), wait, timeout, as_json)


HISTORY_COLUMNS = ("dateTime", "transactionType", "amount", "balance", "comment", "receiptNr")


def history_table(items: list[dict[str, Any]], title: str) -> Table:
    """History entries as Treazure sent them, one row each, in the order given."""
    table = Table(title=title)
    for column in HISTORY_COLUMNS:
        table.add_column(column, overflow="fold",
                         no_wrap=column == "dateTime",  # one line while it fits
                         justify="right" if column in ("amount", "balance") else "left")
    for entry in items:  # Text: a comment's "[…]" is shown, not read as markup
        table.add_row(*(Text("" if entry.get(c) is None else str(entry.get(c)))
                        for c in HISTORY_COLUMNS))
    return table


def _masked(message: str) -> str:
    """A remote's error text on one short line, with every configured secret masked."""
    from worker.base.logs import default_redactor

    return default_redactor().one_line(message, 200)


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    err_console.print(f"pointsync: {message}", markup=False, highlight=False)
    raise typer.Exit(1)


async def _fetch_history(contact_id: str) -> dict[str, Any]:
    from worker.faces.runtime import remote
    from worker.flows import history

    async with remote() as parts:
        return await history.fetch_history(parts, contact_id)


@cli.command("history")
def history_command(
    contact_id: Annotated[str, typer.Argument(help="Engage contact id (Treazure account).")],
    offset: Annotated[int, typer.Option(min=0, help="Entries to skip, newest first.")] = 0,
    count: Annotated[int, typer.Option(min=1, max=1000, help="Entries to show.")] = 100,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Fetch new entries from Treazure first.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Machine-readable: the web endpoint's answer.")] = False,
) -> None:
    """A contact's stored points history, newest first (fetched from Treazure first when
    never fetched, or with --refresh)."""
    from worker.base.arguments import InvalidArgument
    from worker.base.http import RemoteError
    from worker.base.point_request import validate_contact_id
    from worker.base.settings import get_core_settings, get_settings
    from worker.faces.runtime import prepare_store
    from worker.flows.history import UnknownContact
    from worker.store.history import HistoryStore, MalformedHistory

    try:
        contact_id = validate_contact_id(contact_id)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    store = HistoryStore(prepare_store(get_core_settings().DATABASE_URL))
    if refresh or store.fetched(contact_id) is None:
        get_settings()  # Treazure's settings, checked before anything is sent
        try:
            summary = asyncio.run(_fetch_history(contact_id))
        except UnknownContact:
            _fail(f"contact_id: Treazure has no account {contact_id} (unknown contact)")
        except RemoteError as exc:
            _fail(f"Treazure: {_masked(exc.reason)}")
        except MalformedHistory:
            _fail("Treazure: sent a history entry without a valid dateTime")
        if not as_json:
            console.print(f"fetched from Treazure: {summary.get('received', 0)} entries "
                          f"received, {summary.get('added', 0)} new", highlight=False)
    items, total = store.page(contact_id, offset, count)
    if as_json:
        from worker.faces.web.app import history_answer

        print(json.dumps(history_answer(items, total, offset)))
        return
    console.print(history_table(items, f"points history of {contact_id}"))
    shown = f"{len(items)} of {total} entries"
    console.print(shown if not offset else f"{shown} (from offset {offset})", highlight=False)


@cli.command()
def web() -> None:
    """Run the web process: Engage's webhook receiver, the points-history endpoint and
    /health (PORT, WEB_HOST)."""
    from worker.faces.web.app import main as web_main

    web_main()


@cli.command()
def sim(
    host: str = "127.0.0.1",
    treazure_port: int = 8101,
    engage_port: int = 8102,
    seed_contacts: Annotated[int, typer.Option(help="Accounts to create at start.")] = 0,
    seed_changed: Annotated[int | None, typer.Option(help="How many changed lately.")] = None,
) -> None:
    """Run the Treazure and Engage simulators (demo, tests, benchmark)."""
    from sims.server import run

    run(host, treazure_port, engage_port, seed_contacts, seed_changed)


@cli.command()
def demo(
    contacts: Annotated[int, typer.Option(help="Contacts seeded in the simulators.")] = 50_000,
) -> None:
    """The main job end to end on embedded defaults: Redis, simulators, worker, beat, a sync."""
    from sims.demo import run_demo

    raise typer.Exit(run_demo(contacts))


cli.command()(operations_cli.migrate)
cli.command()(operations_cli.reconcile)
cli.command()(operations_cli.doctor)


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest migration."""
    from worker.base.settings import get_core_settings
    from worker.faces.runtime import prepare_store

    prepare_store(get_core_settings().DATABASE_URL)
    console.print("database schema is up to date")


def _configure_logging() -> None:
    """LOG_FORMAT as everywhere else; at WARNING at least, since a terminal has the
    progress bars and summaries for what the flows log at INFO."""
    import logging

    from worker.base.logs import configure_logging
    from worker.base.settings import get_core_settings

    settings = get_core_settings()
    level = max(logging.getLevelName(settings.LOG_LEVEL), logging.WARNING)
    configure_logging(settings.LOG_FORMAT, logging.getLevelName(level))


def main() -> None:
    try:
        _configure_logging()
        cli()
    except ConfigError as exc:
        exit_on_config_error(exc)


if __name__ == "__main__":
    sys.exit(main())
