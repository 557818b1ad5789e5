"""The operator commands for go-live and health: migrate, reconcile, doctor.

Registered on the `pointsync` CLI by worker/cli.py; kept here so each file stays one job.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from worker.flows.parts import Parts

# soft_wrap: a message is one line however narrow the terminal (logs and scripts grep it).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
DEFAULT_SAMPLE = 100


def _run_remote(work: Callable[[Parts], Awaitable[T]]) -> T:
    """Run `work` with the worker's own clients, store and Redis, in this process."""
    from worker.base.settings import get_settings
    from worker.faces.runtime import prepare_store, remote

    settings = get_settings()  # a missing setting stops here, before anything is sent
    prepare_store(settings.DATABASE_URL)

    async def main() -> T:
        async with remote(settings) as parts:
            return await work(parts)

    return asyncio.run(main())


class ProgressBar(Progress):
    """A live bar in a terminal. Elsewhere (cron, CI, a log file) a bar cannot redraw, so
    the last state is written once, as one plain line, when the bar closes."""

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)  # type: ignore[arg-type]
        if self.disable:
            for task in self.tasks:
                err_console.print(f"{task.description}: {task.fields.get('counts', '')}",
                                  highlight=False, markup=False)


def progress_bar() -> Progress:
    # No total is known in advance (Treazure's job does not say how many rows it holds):
    # a pulsing bar, the counters and the elapsed time.
    return ProgressBar(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                       BarColumn(bar_width=12), TextColumn("{task.fields[counts]}"),
                       TimeElapsedColumn(), console=err_console, transient=False,
                       disable=not err_console.is_terminal)


def counts_text(counts: Any) -> str:
    return (f"read {counts.fetched:,} · pushed {counts.pushed:,} · already sent "
            f"{counts.unchanged:,} · stale {counts.stale:,} · refused {counts.rejected:,}")


def migrate(
    csv_dir: Annotated[Path | None, typer.Option(
        "--csv", help="Write Engage's points import files into this folder instead of "
                      "pushing (semicolon-separated UTF-8, ≤ --rows-per-file rows each).",
        file_okay=False)] = None,
    since: Annotated[str, typer.Option(
        help="Read balances mutated since this time (default: all of them).")]
        = "1970-01-01T00:00:00Z",
    rows_per_file: Annotated[int, typer.Option(
        min=1, max=20_000, help="Data rows per import file (--csv).")] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Go-live: copy every balance from Treazure to Engage, with progress.

    Interrupted (Ctrl-C, a crash, a failure)? Run it again: balances Engage was already
    sent are skipped without a request, so it resumes where it stopped. A successful copy
    sets the watermark: the hourly sync starts where the copy began.
    """
    from worker.flows.sync import InvalidArgument, parse_time_argument

    try:
        parse_time_argument("since", since)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if csv_dir is not None:
        _export(csv_dir, since, rows_per_file, as_json)
        return
    from worker.base.settings import get_settings
    from worker.faces.runtime import prepare_store
    from worker.flows import migrate as flow

    store = prepare_store(get_settings().DATABASE_URL)
    previous = store.recent_runs(1, kind="migrate")
    if previous and previous[0]["status"] not in ("succeeded", "skipped") and not as_json:
        console.print(f"resuming: migration run {previous[0]['id']} ({previous[0]['status']}) "
                      f"pushed {previous[0]['pushed']:,}; what Engage was sent is skipped",
                      highlight=False)
    with progress_bar() as bar:
        task = bar.add_task("migrating", total=None, counts="starting the Treazure job…")
        try:
            summary = _run_remote(lambda parts: flow.migrate(
                parts, since=since,
                progress=lambda c: bar.update(task, counts=counts_text(c))))
        except KeyboardInterrupt:
            bar.stop()
            err_console.print("interrupted: what Engage accepted is recorded; run "
                                       "`pointsync migrate` again to resume")
            raise typer.Exit(130) from None
        bar.update(task, counts=counts_text(summary.counts))
    _print_summary(summary.as_dict(), as_json, "migration")
    if summary.status == "skipped":
        err_console.print("a sync run holds the run lock; run migrate again when it "
                                   "has finished (pointsync status)")
    if summary.status != "succeeded":
        raise typer.Exit(1)


def _export(directory: Path, since: str, rows_per_file: int, as_json: bool) -> None:
    from worker.flows import migrate as flow

    with progress_bar() as bar:
        task = bar.add_task("reading balances", total=None, counts="")

        async def work(parts: Parts) -> Any:
            return await flow.export_import_files(
                parts.settings, parts.treazure, directory, since=since,
                rows_per_file=rows_per_file,
                progress=lambda n: bar.update(task, counts=f"read {n:,}"))

        summary = _run_remote(work)
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data))
        return
    console.print(f"wrote {summary.rows:,} balances into {len(summary.files)} file(s) in "
                  f"{directory} (read {summary.fetched:,}, malformed {summary.malformed:,}, "
                  f"replaced {summary.removed_old_files} older file(s))", highlight=False)
    console.print("Import them with Engage's point import (README: Go-live). Once imported, "
                  "close the gap since the read with:\n"
                  f"  pointsync sync --since {summary.read_started_at}", highlight=False)


def _print_summary(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        if value is not None:
            table.add_row(key.replace("_", " "),
                          f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


def read_contacts_file(path: str) -> list[str]:
    """Contact ids, one per line (first column of a CSV line; # comments and blanks
    skipped). A bad id is refused with its line number, before anything is read remotely."""
    from worker.base.arguments import InvalidArgument
    from worker.base.point_request import validate_contact_id

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    ids: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0].replace(";", ",").split(",", 1)[0].strip()
        if not value:
            continue
        try:
            ids.append(validate_contact_id(value))
        except InvalidArgument as exc:
            raise typer.BadParameter(f"{path} line {number}: {exc}",
                                     param_hint="--contacts") from None
    if not ids:
        raise typer.BadParameter(f"{path} holds no contact id", param_hint="--contacts")
    return ids


def reconcile(
    contacts: Annotated[str | None, typer.Option(
        help="File of contact ids, one per line ('-' reads stdin).")] = None,
    sample: Annotated[int | None, typer.Option(
        min=1, help=f"Check this many contacts picked at random among those synced "
                    f"(default {DEFAULT_SAMPLE} without --contacts).")] = None,
    heal: Annotated[bool, typer.Option(
        "--heal", help="Set Treazure's balance in Engage for every drifting contact, "
                       "through the normal push path.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Compare Engage's balances with Treazure's; print the drift, and fix it with --heal.

    Exit status: 0 when nothing drifts (or everything was healed), 1 otherwise.
    """
    from worker.base.settings import get_settings
    from worker.faces.runtime import prepare_store
    from worker.flows import reconcile as flow

    if contacts is not None and sample is not None:
        raise typer.BadParameter("give --contacts or --sample, not both", param_hint="--sample")
    if contacts is not None:
        ids = read_contacts_file(contacts)
    else:
        ids = prepare_store(get_settings().DATABASE_URL).sample_contact_ids(
            sample or DEFAULT_SAMPLE)
        if not ids:
            console.print("no contact has been synced yet: give --contacts FILE")
            raise typer.Exit(1)

    async def work(parts: Parts) -> Any:
        with progress_bar() as bar:
            task = bar.add_task("reading both sides", total=len(ids), counts="")
            report = await flow.compare(
                parts, ids, progress=lambda n: bar.update(task, completed=n,
                                                          counts=f"{n:,}/{len(ids):,}"))
        if heal and report.drift:
            await flow.heal(parts, report)
        return report

    report = _run_remote(work)
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        _print_report(report)
    healed = report.heal is not None and report.heal.status == "succeeded" \
        and report.heal.counts.pushed + report.heal.counts.stale == sum(
            1 for r in report.drift if r.treazure is not None)
    unhealable = any(r.treazure is None for r in report.drift)
    if report.errors or (report.drift and (not healed or unhealable)):
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    if report.drift:
        table = Table(title=f"drift ({len(report.drift)} contacts)")
        for column in ("contact", "Treazure", "Engage", "reason"):
            table.add_column(column, justify="right" if column in ("Treazure", "Engage")
                             else "left")
        for r in report.drift:
            table.add_row(r.contact_id, "—" if r.treazure is None else f"{r.treazure:f}",
                          "—" if r.engage is None else f"{r.engage:f}", r.drift)
        console.print(table)
    console.print(f"checked {report.checked:,}: {len(report.drift):,} drifting, "
                  f"{len(report.unknown):,} in neither system, {len(report.errors):,} "
                  "could not be read", highlight=False)
    for contact_id, error in list(report.errors.items())[:10]:
        console.print(Text(f"  {contact_id}: {error}"))
    if report.heal is not None:
        h = report.heal
        console.print(f"heal run {h.run_id} {h.status}: pushed {h.counts.pushed:,}, newer "
                      f"balance already sent {h.counts.stale:,}, refused by Engage "
                      f"{h.counts.rejected:,}" + (f" ({h.error})" if h.error else ""),
                      highlight=False)
    elif report.drift:
        console.print("run again with --heal to set Treazure's balances in Engage")
    orphans = sum(1 for r in report.drift if r.treazure is None)
    if orphans:
        console.print(f"{orphans:,} contact(s) have points in Engage but no account in "
                      "Treazure: --heal leaves them; check them in Treazure", highlight=False)


STATUS_STYLE = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]",
                "fail": "[red]FAIL[/red]", "skip": "[dim]skip[/dim]"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable results.")] = False,
) -> None:
    """Check the configuration, Redis, the database, Treazure (token), Engage (apikey),
    the sync lag and the workers; say what is wrong and how to fix it. Exit 1 on a failure."""
    from worker.faces.cli import doctor as checks

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
    if any(check.status == "fail" for check in results):
        raise typer.Exit(1)
