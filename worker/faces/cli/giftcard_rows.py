"""The one rendering of gift-card rows (orders, redemptions, till operations) and outcomes
in the CLI. Card numbers are masked unless a caller asks to reveal a stored one; a PIN is
never stored, so never here."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.table import Table

from worker.faces.cli.output import cell, console, field_table, jsonable
from worker.store.database import Store
from worker.store.giftcards import Adjustments, Orders, Redemptions
from worker.systems.toggle.cards import format_minor, mask_card_number

KINDS = ("order", "redemption", "till")
LIST_COLUMNS = ("kind", "reference", "state", "value", "card_number", "updated_at", "reason")
# Minor-unit columns shown as "10.00"; the points ledger's cents likewise.
_AMOUNTS = {"value_minor": "value", "points_cents": "points",
            "balance_after_minor": "balance_after", "balance_minor": "balance"}
_SECRET = ("card_reference",)  # stored in full: shown only when revealed


def tables(store: Store) -> dict[str, Any]:
    """Each kind's outbox (listing, get, reopen)."""
    return {"order": Orders(store).outbox, "redemption": Redemptions(store).outbox,
            "till": Adjustments(store).outbox}


def row_fields(kind: str, row: Any, *, reveal: bool = False) -> dict[str, Any]:
    """Every field of a row, amounts as decimals, the card number masked unless `reveal`."""
    raw = asdict(row) if is_dataclass(row) and not isinstance(row, type) else dict(row)
    shown: dict[str, Any] = {"kind": kind}
    for name, value in raw.items():
        if name in _AMOUNTS:
            shown[_AMOUNTS[name]] = None if value is None else format_minor(int(value))
        elif name in _SECRET:
            if reveal:
                shown["card_number_full"] = value
        else:
            shown[name] = value
    full = raw.get("card_reference")
    if not shown.get("card_masked") and full:
        shown["card_masked"] = mask_card_number(full)
    shown["card_number"] = shown.pop("card_masked", None)
    return shown


def find(store: Store, reference: str) -> tuple[str, Any] | None:
    """The kind and row of a reference, whichever table holds it (a redemption before the
    order it made under the same reference)."""
    for kind in ("redemption", "order", "till"):
        row = tables(store)[kind].get(reference)
        if row is not None:
            return kind, row
    return None


def listing(store: Store, state: str | None, limit: int) -> list[tuple[str, Any]]:
    """The most recently changed rows of every kind, newest first."""
    rows = [(kind, row) for kind, outbox in tables(store).items()
            for row in outbox.listing(state, limit)]
    rows.sort(key=lambda pair: pair[1].updated_at, reverse=True)
    return rows[:limit]


def print_rows(rows: list[tuple[str, Any]], as_json: bool, title: str) -> None:
    fields = [row_fields(kind, row) for kind, row in rows]
    if as_json:
        print(json.dumps([{k: jsonable(v) for k, v in f.items()} for f in fields]))
        return
    table = Table(title=title)
    for column in LIST_COLUMNS:
        table.add_column(column.replace("_", " "), overflow="fold")
    for data in fields:
        table.add_row(*(cell(data.get(column)) for column in LIST_COLUMNS))
    console.print(table)


def print_row(kind: str, row: Any, as_json: bool, *, reveal: bool = False) -> None:
    data = row_fields(kind, row, reveal=reveal)
    if as_json:
        print(json.dumps({k: jsonable(v) for k, v in data.items()}))
        return
    console.print(field_table(f"gift card {kind} {row.reference}",
                              ((k, cell(v)) for k, v in data.items()), fold=True))


def print_outcome(title: str, data: dict[str, Any], as_json: bool) -> None:
    """A flow's as_dict() (already masked and PIN-free)."""
    if as_json:
        print(json.dumps({k: jsonable(v) for k, v in data.items()}))
        return
    console.print(field_table(title, ((k, cell(v)) for k, v in data.items()
                                      if v is not None and v is not False), fold=True))
