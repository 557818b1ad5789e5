"""How a sync run and its counters are shown: the recent-runs table, one run's summary and
the progress line (the counters named as the store names them: unchanged, rejected)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from worker.faces.cli.output import cell, field_table, short_cell
from worker.flows.sync.summary import Counts

RUN_COLUMNS = ("id", "kind", "status", "window_from", "window_to", "duration_seconds",
               "fetched", "unique_contacts", "unchanged", "stale", "pushed", "rejected", "error")

# The table of recent runs: what fits in 100 columns; `--json` and the run summary have all.
RUN_TABLE_COLUMNS = (("id", "id"), ("kind", "kind"), ("status", "status"),
                     ("window", "window (UTC)"), ("duration_seconds", "s"), ("fetched", "read"),
                     ("pushed", "pushed"), ("unchanged", "unchanged"), ("stale", "stale"),
                     ("rejected", "rejected"), ("error", "error"))


def runs_table(runs: list[dict[str, Any]], title: str = "sync runs") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column, header in RUN_TABLE_COLUMNS:
        table.add_column(header, overflow="fold", no_wrap=column != "error",
                         justify="left" if column in ("kind", "status", "error") else "right")
    for run in runs:
        cells = {**run, "window": _window_text(run.get("window_from"), run.get("window_to"))}
        table.add_row(*(short_cell(cells.get(column))[:80] for column, _ in RUN_TABLE_COLUMNS))
    return table


def _window_text(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "—"  # a heal pushes given contacts, it reads no window
    first = "all time" if start.year < 2000 else short_cell(start)
    return f"{first} → {short_cell(end)}"


def run_summary(run: dict[str, Any], title: str = "sync run") -> Table:
    """One run as a two-column table: readable in any terminal width."""
    return field_table(title, ((column.replace("_seconds", " (s)").replace("_", " "),
                                cell(run.get(column)))
                               for column in RUN_COLUMNS if run.get(column) is not None))


def counts_text(counts: Counts) -> str:
    """A run's counters on one line, for the progress bar."""
    return (f"read {counts.fetched:,} · pushed {counts.pushed:,} · unchanged "
            f"{counts.unchanged:,} · stale {counts.stale:,} · rejected {counts.rejected:,}")
