"""The one rendering of a ledger row in the CLI: its fields, a table of rows, one row in
full (every command that prints a point transaction goes through here)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from worker.faces.cli.output import cell, console, field_table, jsonable
from worker.flows.points.record import decimal_text
from worker.store.ledger import LedgerRow

POINT_COLUMNS = ("reference", "state", "contact_id", "amount", "balance", "attempts", "source",
                 "updated_at", "reason")


def point_fields(row: LedgerRow) -> dict[str, Any]:
    """Every field an operator may need, amounts as decimals, in the order shown."""
    return {"reference": row.reference, "state": row.state, "contact_id": row.contact_id,
            "amount": decimal_text(row.amount_cents), "description": row.description,
            "balance": decimal_text(row.balance_cents), "attempts": row.attempts,
            "uncertain": row.uncertain, "source": row.source, "reason": row.reason,
            "created_at": row.created_at, "updated_at": row.updated_at,
            "booked_at": row.booked_at, "applied_at": row.applied_at}


def point_json(row: LedgerRow) -> dict[str, Any]:
    return {key: jsonable(value) for key, value in point_fields(row).items()}


def points_table(
    rows: list[LedgerRow], title: str, columns: tuple[str, ...] = POINT_COLUMNS
) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        data = point_fields(row)
        table.add_row(*(cell(data[column]) for column in columns))
    return table


def print_point(row: LedgerRow, as_json: bool) -> None:
    """One transaction, every field: a JSON line, or a two-column table."""
    if as_json:
        print(json.dumps(point_json(row)))
        return
    console.print(field_table(f"transaction {row.reference}",
                              ((key.replace("_", " "), cell(value))
                               for key, value in point_fields(row).items() if value is not None),
                              fold=True))


def print_points(rows: list[LedgerRow], as_json: bool, title: str) -> None:
    """Several transactions: a JSON list, or a table."""
    if as_json:
        print(json.dumps([point_json(row) for row in rows]))
        return
    console.print(points_table(rows, title))
