"""`pointsync relay …`: how each route (toggle → atreemo, nector → contlo) stands, the
deliveries behind it (list, show, failed), and replay of a failed one.

A delivery is named by its key, `{source}:{event id}:{destination}`. Bodies are never
printed: an event's body is the source's data, forwarded, not the operator's to read here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.base.http import RemoteError
from worker.base.settings import get_core_settings
from worker.faces.cli.output import (
    cell,
    console,
    err_console,
    fail,
    field_table,
    masked,
    progress_bar,
)
from worker.faces.cli.remote import run_remote
from worker.faces.runtime import prepare_store
from worker.flows.relays import backfill, sweep
from worker.flows.relays.receive import TOGGLE
from worker.flows.relays.status import STATES, route_status
from worker.store.outbox import FAILED
from worker.store.relays import RECEIVED, DeliveryRow, Relays

relay_cli = typer.Typer(no_args_is_help=True,
                        help="Event relays (Toggle → Atreemo, Nector → Contlo): status, "
                             "deliveries, failures, replay.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LimitOption = Annotated[int, typer.Option(help="How many to show, most recently changed first.")]
LIST_FIELDS = ("key", "state", "topic", "subject", "attempts", "ambiguous", "created_at",
               "updated_at", "reason")


def _relays() -> Relays:
    return Relays(prepare_store(get_core_settings().DATABASE_URL))


def _as_dict(row: DeliveryRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__dataclass_fields__}


def _json(data: Any) -> None:
    print(json.dumps(data, default=lambda value: value.isoformat(), sort_keys=True))


def _print_rows(found: list[DeliveryRow], as_json: bool, title: str) -> None:
    if as_json:
        _json([_as_dict(row) for row in found])
        return
    table = Table(title=title)
    for name in LIST_FIELDS:
        table.add_column(name, overflow="fold")
    for row in found:
        table.add_row(*(cell(getattr(row, name)) for name in LIST_FIELDS))
    console.print(table)


def _known(relays: Relays, key: str) -> DeliveryRow:
    row = relays.get(key)
    if row is None:
        fail(f"delivery: no relay delivery {key!r} (keys are source:event id:destination)")
    return row


@relay_cli.command("status")
def relay_status(as_json: JsonOption = False) -> None:
    """Per route: received (not yet delivered), delivered, filtered, failed, lost answers,
    and how long the oldest undelivered event has waited."""
    status = route_status(_relays())
    if as_json:
        _json(status)
        return
    table = Table(title="relays")
    for name in ("route", *STATES, "ambiguous", "oldest undelivered"):
        table.add_column(name)
    for line in status:
        age = line["oldest_undelivered_seconds"]
        table.add_row(f"{line['source']} → {line['destination']}",
                      *(cell(line[state]) for state in STATES), cell(line["ambiguous"]),
                      "" if age is None else f"{age:,.0f} s")
    console.print(table)


@relay_cli.command("list")
def relay_list(
    state: Annotated[str | None, typer.Option(help="Only deliveries in this state.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Recent deliveries, of one state or all."""
    if state is not None and state not in STATES:
        fail(f"state: one of {', '.join(STATES)}")
    _print_rows(_relays().outbox.listing(state, limit), as_json, "relay deliveries")


@relay_cli.command("failed")
def relay_failed(limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """Deliveries that ended failed, with the reason (`pointsync relay replay KEY`)."""
    found = _relays().failed(limit)
    _print_rows(found, as_json, f"failed relay deliveries ({len(found)} shown)")


@relay_cli.command("show")
def relay_show(
    key: Annotated[str, typer.Argument(help="The delivery: source:event id:destination.")],
    as_json: JsonOption = False,
) -> None:
    """One delivery, every field (the event's body is not printed)."""
    data = _as_dict(_known(_relays(), key))
    if as_json:
        _json(data)
        return
    console.print(field_table(f"relay delivery {key}", [(name, cell(value))
                                                        for name, value in data.items()],
                              fold=True))


@relay_cli.command("replay")
def relay_replay(
    key: Annotated[str, typer.Argument(help="The failed delivery: source:event id:destination.")],
    as_json: JsonOption = False,
) -> None:
    """Put a failed delivery back to received and queue its subject's delivery (left to
    the workers' sweep when the broker cannot be reached)."""
    relays = _relays()
    row = _known(relays, key)
    if row.state != FAILED:
        fail(f"{key} is {row.state}, not failed: nothing to replay")
    replayed = sweep.replay(relays, key)
    if replayed is None or replayed.state != RECEIVED:
        fail(f"{key} could not be reopened (now {getattr(replayed, 'state', 'gone')})")
    # Local: building the Celery app reads the settings; only this command sends.
    from worker.faces.celery.app import app

    try:
        app.send_task("pointsync.relay_subject",
                      kwargs={"source": replayed.source, "subject": replayed.subject},
                      ignore_result=True)
        queued = True
    except Exception as exc:  # reopened all the same: the sweep delivers it
        err_console.print(f"could not queue ({type(exc).__name__}); the sweep will deliver "
                          f"{key}", highlight=False, markup=False)
        queued = False
    if as_json:
        _json({**_as_dict(replayed), "queued": queued})
    else:
        console.print(f"{key} is received again{'' if queued else ' (left to the sweep)'}",
                      highlight=False, markup=False)


# -- backfill (Toggle keeps no replayable history of its events) --------------------------


def _moment(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time ({text!r}); e.g. 2026-11-01 or "
             "2026-11-01T09:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@relay_cli.command("backfill")
def relay_backfill(
    source: Annotated[str, typer.Argument(help="The source to backfill: toggle.")],
    since: Annotated[str, typer.Option("--since", help="Orders created from (ISO 8601).")],
    until: Annotated[str | None, typer.Option(
        "--until", help="Orders created until (ISO 8601); now when absent.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record Toggle's past orders as order.created for Atreemo (each order once; one
    already relayed live is skipped) and queue their delivery."""
    if source != TOGGLE:
        fail(f"source: only {TOGGLE!r} can be backfilled (Toggle's orders), not {source!r}")
    start, end = _moment(since, "--since"), None if until is None else _moment(until, "--until")
    with progress_bar() as bar:
        task = bar.add_task("backfill toggle orders", total=None, counts="")

        def show(done: int, total: int) -> None:
            bar.update(task, total=total or None, completed=done, counts=f"{done}/{total}")

        try:
            outcome = run_remote(lambda parts: backfill.backfill_toggle_orders(
                parts, start, end, progress=show))
        except backfill.BackfillUnavailable as exc:
            fail(str(exc))
        except RemoteError as exc:
            fail(f"{exc.service}: {masked(exc.reason)}")
    from worker.faces.celery.app import app  # local: only this command sends

    queued = 0
    for subject in outcome.subjects:
        try:
            app.send_task("pointsync.relay_subject",
                          kwargs={"source": TOGGLE, "subject": subject}, ignore_result=True)
            queued += 1
        except Exception as exc:  # recorded all the same: the sweep delivers them
            err_console.print(f"could not queue ({type(exc).__name__}); the sweep will "
                              "deliver the rest", highlight=False, markup=False)
            break
    data = {**outcome.as_dict(), "queued": queued}
    if as_json:
        _json(data)
    else:
        console.print(field_table("backfill toggle → atreemo",
                                  ((name, cell(value)) for name, value in data.items())))
