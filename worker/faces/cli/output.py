"""What every command prints with: the two consoles, cell text, field tables, the progress
bar, and the one-line failure."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.base.logs import default_redactor

# soft_wrap: a message stays one line in any terminal (scripts and logs grep it).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def cell(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%SZ"))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def short_cell(value: Any) -> str:
    """A cell for a wide table: minutes, one decimal."""
    if hasattr(value, "strftime"):
        return str(value.strftime("%m-%d %H:%M"))
    if isinstance(value, float):
        return f"{value:,.1f}"
    return cell(value)


def field_table(title: str, fields: Iterable[tuple[str, str]], *, fold: bool = False) -> Table:
    """One record as a two-column table (field, value): readable in any terminal width."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    if fold:
        table.add_column("value", overflow="fold")
    else:
        table.add_column("value")
    for field, value in fields:
        table.add_row(field, value)
    return table


def masked(message: str) -> str:
    """A remote's error text on one short line, with every configured secret masked."""
    return default_redactor().one_line(message, 200)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    err_console.print(f"pointsync: {message}", markup=False, highlight=False)
    raise typer.Exit(1)


class ProgressBar(Progress):
    """A live bar in a terminal. Elsewhere (cron, CI, a log file) a bar cannot redraw, so
    the last state is written once, as one plain line, when the bar closes."""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, traceback)
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


def age_text(seconds: float) -> str:
    """A duration as an operator reads it: `2 h 5 min`, `4 min 12 s`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"
