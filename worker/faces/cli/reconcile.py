"""`pointsync reconcile`: compare Engage's balances with Treazure's, report the drift and
heal it on request."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from worker.base.arguments import InvalidArgument
from worker.base.point_request import validate_contact_id
from worker.base.settings import get_settings
from worker.faces.cli.output import console, progress_bar
from worker.faces.cli.remote import run_remote
from worker.faces.runtime import prepare_store
from worker.flows import reconcile as flow
from worker.flows.parts import Parts
from worker.flows.reconcile import ReconcileReport

DEFAULT_SAMPLE = 100


def read_contacts_file(path: str) -> list[str]:
    """Contact ids, one per line (first column of a CSV line; # comments and blanks
    skipped). A bad id is refused with its line number, before anything is read remotely."""
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

    async def work(parts: Parts) -> ReconcileReport:
        with progress_bar() as bar:
            task = bar.add_task("reading both sides", total=len(ids), counts="")
            report = await flow.compare(
                parts, ids, progress=lambda n: bar.update(task, completed=n,
                                                          counts=f"{n:,}/{len(ids):,}"))
        if heal and report.drift:
            await flow.heal(parts, report)
        return report

    report = run_remote(work)
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


def _print_report(report: ReconcileReport) -> None:
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
        console.print(f"heal run {h.run_id} {h.status}: pushed {h.counts.pushed:,}, stale "
                      f"(a newer balance was already sent) {h.counts.stale:,}, rejected by "
                      f"Engage {h.counts.rejected:,}" + (f" ({h.error})" if h.error else ""),
                      highlight=False)
    elif report.drift:
        console.print("run again with --heal to set Treazure's balances in Engage")
    orphans = sum(1 for r in report.drift if r.treazure is None)
    if orphans:
        console.print(f"{orphans:,} contact(s) have points in Engage but no account in "
                      "Treazure: --heal leaves them; check them in Treazure", highlight=False)
