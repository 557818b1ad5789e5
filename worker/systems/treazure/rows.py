"""A balance row of a Balances/Get page, and a page's rows held a column at a time."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple, overload


class BalanceEntry(NamedTuple):
    """One row of a Balances/Get result: the balance of an account as of `mutated_at`."""

    contact_id: str
    cents: int
    mutated_us: int  # mutated_at as µs since the epoch, for cheap comparisons
    mutated_at: datetime
    amount: Decimal | float | int  # exact: see money.exact_amount


# tuple.__new__ builds the named tuple in C; the generated __new__ is a Python call.
new_entry = functools.partial(tuple.__new__, BalanceEntry)


class PageRows(Sequence[BalanceEntry]):
    """A page's good rows as columns; a row's BalanceEntry is built only when asked for.

    A sync drops most rows of a re-run by their (contact, cents, µs) alone (flows/sync/
    screen.py), so the row tuples of those are never built: at a million rows that was a
    fifth of reading the job.
    """

    __slots__ = ("_amounts", "_entries", "_moments", "cents", "contact_ids", "micros")

    def __init__(self, contact_ids: list[str], cents: list[int], micros: list[int],
                 moments: list[datetime], amounts: list[Decimal | float | int]) -> None:
        self.contact_ids = contact_ids
        self.cents = cents
        self.micros = micros
        self._moments = moments
        self._amounts = amounts
        self._entries: list[BalanceEntry] | None = None

    @classmethod
    def of(cls, entries: list[BalanceEntry]) -> PageRows:
        """Rows already built (a page read row by row)."""
        columns: list[list[object]] = [list(column) for column in zip(*entries, strict=True)]
        rows = cls(*columns) if columns else cls([], [], [], [], [])  # type: ignore[arg-type]
        rows._entries = entries
        return rows

    def keys(self) -> list[tuple[str, int, int]]:
        """(contact, cents, mutated µs) of each row: what the store compares."""
        return list(zip(self.contact_ids, self.cents, self.micros, strict=True))

    def entries(self) -> list[BalanceEntry]:
        if self._entries is None:
            self._entries = list(map(new_entry, zip(
                self.contact_ids, self.cents, self.micros, self._moments, self._amounts,
                strict=True)))
        return self._entries

    def at(self, positions: Iterable[int]) -> list[BalanceEntry]:
        """The rows at `positions`, built alone if the page's rows were not."""
        if self._entries is not None:
            return list(map(self._entries.__getitem__, positions))
        return [new_entry((self.contact_ids[i], self.cents[i], self.micros[i],
                           self._moments[i], self._amounts[i])) for i in positions]

    def __len__(self) -> int:
        return len(self.contact_ids)

    @overload
    def __getitem__(self, index: int) -> BalanceEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[BalanceEntry]: ...

    def __getitem__(self, index: int | slice) -> BalanceEntry | list[BalanceEntry]:
        return self.entries()[index]

    def __iter__(self) -> Iterator[BalanceEntry]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PageRows):
            return self.entries() == other.entries()
        return isinstance(other, list) and self.entries() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PageRows({self.entries()!r})"
