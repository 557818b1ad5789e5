"""`pointsync history`: a contact's stored points history, fetched from Treazure first when
it never was (or with --refresh)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from worker.base.arguments import InvalidArgument
from worker.base.http import RemoteError
from worker.base.point_request import validate_contact_id
from worker.base.settings import get_core_settings, get_settings
from worker.faces.cli.output import console, fail, masked
from worker.faces.runtime import prepare_store, remote
from worker.flows import history as history_flow
from worker.store.history import HistoryStore, MalformedHistory

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


async def _fetch_history(contact_id: str) -> dict[str, Any]:
    async with remote() as parts:
        return await history_flow.fetch_history(parts, contact_id)


def _refresh(contact_id: str) -> dict[str, Any]:
    """Fetch the contact's new entries from Treazure; a failure ends the command."""
    get_settings()  # Treazure's settings, checked before anything is sent
    try:
        return asyncio.run(_fetch_history(contact_id))
    except history_flow.UnknownContact:
        fail(f"contact_id: Treazure has no account {contact_id} (unknown contact)")
    except RemoteError as exc:
        fail(f"Treazure: {masked(exc.reason)}")
    except MalformedHistory:
        fail("Treazure: sent a history entry without a valid dateTime")


def history(
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
    try:
        contact_id = validate_contact_id(contact_id)
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None
    store = HistoryStore(prepare_store(get_core_settings().DATABASE_URL))
    if refresh or store.fetched(contact_id) is None:
        summary = _refresh(contact_id)
        if not as_json:
            console.print(f"fetched from Treazure: {summary.get('received', 0)} entries "
                          f"received, {summary.get('added', 0)} new", highlight=False)
    items, total = store.page(contact_id, offset, count)
    if as_json:
        # Local: the web process's module loads aiohttp (~0.6 s), which no other command needs.
        from worker.faces.web.history import history_answer

        print(json.dumps(history_answer(items, total, offset)))
        return
    console.print(history_table(items, f"points history of {contact_id}"))
    shown = f"{len(items)} of {total} entries"
    console.print(shown if not offset else f"{shown} (from offset {offset})", highlight=False)
