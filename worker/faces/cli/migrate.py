"""`pointsync migrate`: the go-live copy of every balance, pushed or written as import files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.base.arguments import InvalidArgument
from worker.base.settings import get_settings
from worker.faces.cli.output import console, err_console, field_table, progress_bar
from worker.faces.cli.remote import run_remote
from worker.faces.cli.runs import counts_text
from worker.faces.runtime import prepare_store
from worker.flows import migrate as flow
from worker.flows.parts import Parts
from worker.flows.sync.window import parse_time_argument


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
    try:
        parse_time_argument("since", since)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if csv_dir is not None:
        _export(csv_dir, since, rows_per_file, as_json)
        return
    store = prepare_store(get_settings().DATABASE_URL)
    previous = store.recent_runs(1, kind="migrate")
    if previous and previous[0]["status"] not in ("succeeded", "skipped") and not as_json:
        console.print(f"resuming: migration run {previous[0]['id']} ({previous[0]['status']}) "
                      f"pushed {previous[0]['pushed']:,}; what Engage was sent is skipped",
                      highlight=False)
    with progress_bar() as bar:
        task = bar.add_task("migrating", total=None, counts="starting the Treazure job…")
        try:
            summary = run_remote(lambda parts: flow.migrate(
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
    with progress_bar() as bar:
        task = bar.add_task("reading balances", total=None, counts="")

        async def work(parts: Parts) -> Any:
            return await flow.export_import_files(
                parts.settings, parts.treazure, directory, since=since,
                rows_per_file=rows_per_file,
                progress=lambda n: bar.update(task, counts=f"read {n:,}"))

        summary = run_remote(work)
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
    console.print(field_table(title, ((key.replace("_", " "),
                                       f"{value:,}" if isinstance(value, int) else str(value))
                                      for key, value in data.items() if value is not None)))
