"""`pointsync giftcard …`: issue a card, turn points into one, do what a till does (balance,
redeem, top up, reverse), and look after the rows (list, show, failed, replay).

The operations run their flow in this process (run_remote), recorded first like the
tasks' calls, so the operator sees the outcome. Card numbers are masked everywhere except
`show --reveal`; an in-venue card's PIN is printed once, to the terminal, and kept nowhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from worker.base import telemetry
from worker.base.arguments import InvalidArgument
from worker.base.http import RemoteError
from worker.base.settings import get_core_settings
from worker.faces.cli import giftcard_rows as rows
from worker.faces.cli.output import err_console, fail, masked
from worker.faces.cli.remote import run_remote
from worker.faces.runtime import prepare_store
from worker.flows.giftcards import issue, redeem, till
from worker.flows.giftcards.requests import (
    validate_adjust_request,
    validate_card_request,
    validate_redeem_request,
)
from worker.flows.parts import Parts
from worker.store.database import Store
from worker.systems.toggle import session

# Toggle's answers by outcome reach /metrics when this process's clients close.
telemetry.count_outcomes("toggle", session.OUTCOMES)

giftcard_cli = typer.Typer(no_args_is_help=True,
                           help="Gift cards through Toggle: issue, points → card, till "
                                "operations, and the rows behind them.")
SOURCE = "cli"
UNFINISHED_EXIT = 2  # recorded and under way: the sweep finishes it
FAILED_STATES = ("failed", "refunded")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SiteOption = Annotated[str, typer.Option("--site", help="A site name of TOGGLE_SITES.")]
LimitOption = Annotated[int, typer.Option(help="How many to show, newest first.")]
ReferenceOption = Annotated[str | None, typer.Option(
    help="Idempotency key; the same one again acts nothing new. Made up when absent.")]


def _run(work: Callable[[Parts], Awaitable[Any]]) -> Any:
    """The flow in this process; refusals and remote failures as one line, exit 1."""
    try:
        return run_remote(work)
    except InvalidArgument as exc:
        fail(str(exc))
    except RemoteError as exc:
        fail(f"{exc.service}: {masked(exc.reason)}")
    except RedisError as exc:  # the shared token and credits live there
        fail(f"redis: {type(exc).__name__} (is REDIS_URL right, is Redis up?)")


def _finish(title: str, outcome: Any, as_json: bool) -> None:
    data = outcome.as_dict()
    rows.print_outcome(title, data, as_json)
    if data.get("state") in FAILED_STATES:
        raise typer.Exit(1)
    if data.get("retry_in") is not None or data.get("in_progress"):
        err_console.print(f"{data.get('reference')} is {data.get('state')}: recorded, and the "
                          "workers' sweep goes on with it", highlight=False, markup=False)
        raise typer.Exit(UNFINISHED_EXIT)


def _store() -> Store:
    return prepare_store(get_core_settings().DATABASE_URL)


# -- operations ---------------------------------------------------------------------------


@giftcard_cli.command("issue")
def giftcard_issue(
    value: Annotated[str, typer.Argument(help="The card's value, e.g. 25.00.")],
    email: Annotated[str | None, typer.Option(
        help="Toggle emails the card here; without it the card is handed over in venue.")] = None,
    reference: ReferenceOption = None,
    message: Annotated[str | None, typer.Option(help="Printed on / sent with the card.")] = None,
    note: Annotated[str | None, typer.Option(help="The order's note in Toggle.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue one gift card (one Toggle order per reference, whatever fails)."""
    try:
        request = validate_card_request(value, email, reference, message, note)
    except InvalidArgument as exc:
        fail(str(exc))
    outcome = _run(lambda parts: issue.issue_gift_card(parts, request, SOURCE))
    pin = getattr(outcome, "pin", None)
    if pin:
        # Once, to the terminal (stderr: never into a file that stdout is sent to).
        err_console.print(f"PIN {pin}  (shown once: it is not stored; hand it over with "
                          "the card)", highlight=False, markup=False)
    _finish("gift card", outcome, as_json)


@giftcard_cli.command("redeem-points")
def giftcard_redeem_points(
    contact_id: Annotated[str, typer.Argument(help="Engage contact id (Treazure account).")],
    points: Annotated[str, typer.Argument(help="Points taken, e.g. 500.")],
    value: Annotated[str, typer.Argument(help="The card's value, e.g. 5.00.")],
    email: Annotated[str, typer.Option(help="Toggle emails the card here.")],
    reference: ReferenceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn points into a gift card: the points taken once, one card; points given back
    once if Toggle refuses for good."""
    try:
        request = validate_redeem_request(contact_id, points, value, email, None, reference)
    except InvalidArgument as exc:
        fail(str(exc))
    outcome = _run(lambda parts: redeem.redeem_points_for_gift_card(parts, request, SOURCE))
    _finish("points → gift card", outcome, as_json)


@giftcard_cli.command("balance")
def giftcard_balance(
    card: Annotated[str, typer.Argument(help="Card number (or a moved card's alias).")],
    as_json: JsonOption = False,
) -> None:
    """A card's balance."""
    outcome = _run(lambda parts: till.card_balance(parts, card))
    data = outcome.as_dict()
    rows.print_outcome("gift card balance", data, as_json)
    if data.get("state") != "ok":
        raise typer.Exit(1)


def _adjust(card: str, amount: str, site: str, reference: str | None, as_json: bool,
            sign: str, title: str) -> None:
    if amount.strip().startswith(("-", "+")):
        fail("amount: give it without a sign (redeem takes it off, topup adds it)")

    async def work(parts: Parts) -> Any:
        request = validate_adjust_request(card, f"{sign}{amount.strip()}", site, reference,
                                          settings=parts.settings)
        return await till.adjust_gift_card(parts, request, SOURCE)

    _finish(title, _run(work), as_json)


# ignore_unknown_options: an amount is an argument, never an option.
@giftcard_cli.command("redeem", context_settings={"ignore_unknown_options": True})
def giftcard_redeem(
    card: Annotated[str, typer.Argument(help="Card number (or a moved card's alias).")],
    amount: Annotated[str, typer.Argument(help="Taken off the card, e.g. 12.50.")],
    site: SiteOption,
    reference: ReferenceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Redeem (spend) an amount of a card at a site, once per reference."""
    _adjust(card, amount, site, reference, as_json, "-", "gift card redemption")


@giftcard_cli.command("topup", context_settings={"ignore_unknown_options": True})
def giftcard_topup(
    card: Annotated[str, typer.Argument(help="Card number (or a moved card's alias).")],
    amount: Annotated[str, typer.Argument(help="Added to the card, e.g. 20.00.")],
    site: SiteOption,
    reference: ReferenceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Top up a card at a site, once per reference."""
    _adjust(card, amount, site, reference, as_json, "", "gift card top-up")


@giftcard_cli.command("reverse")
def giftcard_reverse(
    reference: Annotated[str, typer.Argument(help="The redemption, top-up or order to undo.")],
    site: SiteOption,
    as_json: JsonOption = False,
) -> None:
    """Reverse a redemption, top-up or card order once (`REFERENCE-REVERSAL` in Toggle)."""
    _finish("gift card reversal",
            _run(lambda parts: till.reverse_gift_card(parts, reference, site, SOURCE)),
            as_json)


# -- the rows -----------------------------------------------------------------------------


@giftcard_cli.command("list")
def giftcard_list(
    state: Annotated[str | None, typer.Option(help="Only rows in this state.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Recent gift-card orders, redemptions and till operations, newest first."""
    rows.print_rows(rows.listing(_store(), state, limit), as_json, "gift cards")


@giftcard_cli.command("failed")
def giftcard_failed(limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """Rows that ended failed or refunded, with Toggle's reason (`giftcard replay`)."""
    store = _store()
    found = [pair for state in FAILED_STATES for pair in rows.listing(store, state, limit)]
    found.sort(key=lambda pair: pair[1].updated_at, reverse=True)
    rows.print_rows(found[:limit], as_json, f"failed gift cards ({len(found[:limit])} shown)")


def _known(store: Store, reference: str) -> tuple[str, Any]:
    found = rows.find(store, reference)
    if found is None:
        fail(f"reference: no gift card, redemption or till operation {reference!r}")
    return found


@giftcard_cli.command("show")
def giftcard_show(
    reference: Annotated[str, typer.Argument(help="The reference of the row.")],
    reveal: Annotated[bool, typer.Option(
        "--reveal", help="Show the card number in full (a PIN is never stored).")] = False,
    as_json: JsonOption = False,
) -> None:
    """One row, every field; the card number masked unless --reveal."""
    kind, row = _known(_store(), reference)
    rows.print_row(kind, row, as_json, reveal=reveal)


@giftcard_cli.command("replay")
def giftcard_replay(
    reference: Annotated[str, typer.Argument(help="The failed row's reference.")],
    as_json: JsonOption = False,
) -> None:
    """Try a failed card order or till operation again (Toggle is asked what the reference
    made before anything is sent)."""
    store = _store()
    kind, row = _known(store, reference)
    if row.state != "failed":
        fail(f"{reference} is {row.state}, not failed: nothing to replay")
    if kind == "redemption":
        fail(f"{reference} is a points → card redemption: its points are given back or "
             "were never taken; start a new one with a new reference")
    rows.tables(store)[kind].reopen(reference, "received")
    work = issue.process_order if kind == "order" else till.process_adjustment
    _finish(f"gift card {kind} replayed", _run(lambda parts: work(parts, reference)), as_json)
