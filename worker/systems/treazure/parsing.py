"""Treazure's answers read into our types: Balances/Get result pages and Account answers.

Shapes marked [assumed] in contract.md are parsed here, so a tenant that answers
differently is handled by changing this package alone.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

import msgspec

from worker.base.money import (
    EXACT_FLOAT_LIMIT,
    cents_from_json,
    exact_amount,
    looks_like_guid,
    utc_micros,
)


class BalanceEntry(NamedTuple):
    """One row of a Balances/Get result: the balance of an account as of `mutated_at`."""

    contact_id: str
    cents: int
    mutated_us: int  # mutated_at as µs since the epoch, for cheap comparisons
    mutated_at: datetime
    amount: Decimal | float | int  # exact: see money.exact_amount


# tuple.__new__ builds the named tuple in C; the generated __new__ is a Python call.
_new_entry = functools.partial(tuple.__new__, BalanceEntry)


class MalformedEntry(NamedTuple):
    contact_id: str
    reason: str


class _Item(msgspec.Struct):
    accountNumber: str
    # Turned into exact cents by money.cents_from_json; decimal text is accepted too.
    balance: int | float | str
    mutatedAt: Annotated[datetime, msgspec.Meta(tz=True)]
    loyaltyPointDefinitionId: str | None = None


class _Page(msgspec.Struct):
    items: list[_Item] | None = None
    next: str | None = None


class _LoosePage(msgspec.Struct):
    items: list[Any] | None = None
    next: str | None = None


class _NextOnly(msgspec.Struct):
    next: str | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_decode_page = msgspec.json.Decoder(_Page).decode
_decode_next = msgspec.json.Decoder(_NextOnly).decode
_decode_loose_page = msgspec.json.Decoder(_LoosePage).decode


def next_link(raw: bytes) -> str | None:
    """The page's `next` href, read without decoding its items."""
    return _decode_next(raw).next


def _entry(item: _Item) -> BalanceEntry:
    contact_id = item.accountNumber
    if not looks_like_guid(contact_id):
        raise ValueError(f"accountNumber {contact_id!r} is not a GUID")
    balance = item.balance
    if type(balance) is float and -EXACT_FLOAT_LIMIT < balance < EXACT_FLOAT_LIMIT:
        # money.cents_from_json's fast path, inlined: this runs a million times a sync.
        cents = round(balance * 100)
        if cents / 100 != balance:
            raise ValueError(f"balance {balance!r} has more than 2 decimals")
        amount: int | float | Decimal = balance  # exact for output as it is
    else:
        cents = cents_from_json(balance)
        amount = exact_amount(cents)
    moment = item.mutatedAt
    return _new_entry((contact_id, cents, utc_micros(moment), moment, amount))


def parse_page(
    raw: bytes, loyalty_id: str
) -> tuple[list[BalanceEntry], list[MalformedEntry], str | None]:
    """One result page → good rows, bad rows (returned, never dropped) and the next href.

    The whole page is decoded and validated in one C pass; only a page holding a bad row
    takes the row-by-row path that tells which rows are bad and why.
    """
    good: list[BalanceEntry] = []
    bad: list[MalformedEntry] = []
    try:
        page = _decode_page(raw)
    except msgspec.ValidationError:
        loose = _decode_loose_page(raw)
        for item in loose.items or ():
            try:
                parsed = msgspec.convert(item, _Item)
                if parsed.loyaltyPointDefinitionId in (None, loyalty_id):
                    good.append(_entry(parsed))
            except (msgspec.ValidationError, ValueError, ArithmeticError) as exc:
                who = item.get("accountNumber") if isinstance(item, dict) else None
                bad.append(MalformedEntry(
                    str(who or "?"), f"malformed entry: {exc}; entry {item!r}"[:200]))
        return good, bad, loose.next
    append = good.append
    new_entry, epoch, microsecond = _new_entry, _EPOCH, _MICROSECOND
    for item in page.items or ():
        if item.loyaltyPointDefinitionId not in (None, loyalty_id):
            continue  # another program's balance: not ours to sync
        # _entry inlined for the common row (a GUID, a float balance): this loop runs a
        # million times a sync, and each call and check cost as much as the work.
        contact_id, balance, moment = item.accountNumber, item.balance, item.mutatedAt
        if (type(balance) is float and -EXACT_FLOAT_LIMIT < balance < EXACT_FLOAT_LIMIT
                and len(contact_id) == 36
                and contact_id[8] == contact_id[13] == contact_id[18] == contact_id[23] == "-"):
            cents = round(balance * 100)
            if cents / 100 == balance:
                append(new_entry((contact_id, cents, (moment - epoch) // microsecond,
                                  moment, balance)))
                continue
        try:
            append(_entry(item))
        except (ValueError, ArithmeticError) as exc:
            bad.append(MalformedEntry(item.accountNumber, f"malformed entry: {exc}"[:200]))
    return good, bad, page.next


def program_cents(account: Any, loyalty_id: str) -> int | None:
    """Our program's balance in an Account answer (Transaction and Account share it)."""
    for program in account.get("loyaltyPrograms") or []:
        if program.get("loyaltyPointDefinitionId") == loyalty_id:
            return cents_from_json(program["balance"])
    return None
