"""`pointsync points …`: book points by hand, list the transactions and the failed ones,
show one, replay a failed one."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from worker.base.arguments import InvalidArgument
from worker.base.point_request import validate_request
from worker.base.settings import get_core_settings
from worker.faces.cli.ledger_rows import print_point, print_points
from worker.faces.cli.output import console
from worker.faces.runtime import prepare_store
from worker.flows.points.record import booking_arguments, record
from worker.store.ledger import Ledger, LedgerRow

points_cli = typer.Typer(no_args_is_help=True,
                         help="Point transactions: book by hand, list failures, replay.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
WaitOption = Annotated[bool, typer.Option(help="Wait until it is applied in Engage.")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait at most.")]
LimitOption = Annotated[int, typer.Option(help="How many to show, newest first.")]


def _ledger() -> Ledger:
    return Ledger(prepare_store(get_core_settings().DATABASE_URL))


def _enqueue_and_follow(
    ledger: Ledger, row: LedgerRow, wait: bool, timeout: float, as_json: bool
) -> None:
    """Hand the row to the workers; with `wait`, follow it until it settles."""
    # Local: building the Celery app reads the settings (and importing Celery costs ~0.1 s);
    # only the commands that send need it.
    from worker.faces.celery.app import app

    try:
        # Followed in the ledger, not through a result: none is stored.
        app.send_task("pointsync.add_points", kwargs=booking_arguments(row),
                      ignore_result=True)
    except Exception as exc:  # recorded all the same: the sweep finishes it
        console.print(f"[yellow]could not enqueue ({type(exc).__name__}); the sweep will "
                      f"finish {row.reference}[/yellow]", highlight=False)
    deadline = time.monotonic() + timeout
    while wait and row.state in ("received", "booked") and time.monotonic() < deadline:
        time.sleep(0.2)
        row = _known(ledger, row.reference)
    print_point(row, as_json)
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
    wait: WaitOption = True,
    timeout: TimeoutOption = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Book points by hand: recorded, booked in Treazure once, set in Engage."""
    ledger = _ledger()
    try:
        request = validate_request(contact_id, amount, description, reference)
        row, created = record(ledger.store, request, "cli")
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    if not created:
        console.print(f"reference {request.reference} was recorded before: nothing new is booked")
    if row.final:
        print_point(row, as_json)
        raise typer.Exit(1 if row.state == "failed" else 0)
    _enqueue_and_follow(ledger, row, wait, timeout, as_json)


@points_cli.command("failed")
def points_failed(limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """Transactions that ended failed, with the reason (replay them with `points replay`)."""
    rows = _ledger().listing("failed", limit)
    print_points(rows, as_json, f"failed transactions ({len(rows)} shown)")


@points_cli.command("list")
def points_list(
    state: Annotated[str | None, typer.Option(
        help="Only this state: received, booked, applied or failed.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Recent transactions, newest first."""
    print_points(_ledger().listing(state, limit), as_json, "transactions")


def _known(ledger: Ledger, reference: str) -> LedgerRow:
    row = ledger.get(reference)
    if row is None:
        console.print(f"no transaction with reference {reference}")
        raise typer.Exit(1)
    return row


@points_cli.command("show")
def points_show(
    reference: Annotated[str, typer.Argument(help="The transaction's reference.")],
    as_json: JsonOption = False,
) -> None:
    """One transaction, every field."""
    print_point(_known(_ledger(), reference), as_json)


@points_cli.command("replay")
def points_replay(
    reference: Annotated[str, typer.Argument(help="The failed transaction's reference.")],
    wait: WaitOption = True,
    timeout: TimeoutOption = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Try a failed transaction again. One Treazure booked already only goes to Engage
    again; one it did not book is booked (after the usual history check)."""
    ledger = _ledger()
    row = _known(ledger, reference)
    if row.state != "failed":
        console.print(f"{reference} is {row.state}, not failed: nothing to replay")
        raise typer.Exit(1)
    if row.amount_cents is None:
        console.print(f"{reference} was refused as invalid ({row.reason}); "
                      "it cannot be booked as it stands")
        raise typer.Exit(1)
    ledger.reopen(reference)
    _enqueue_and_follow(ledger, _known(ledger, reference), wait, timeout, as_json)
