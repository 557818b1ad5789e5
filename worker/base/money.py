"""Exact points and times at the JSON boundary: integer cents in, decimal text out.

Inside the worker a balance is an int of hundredths, so no sum ever meets a binary float.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Below 10^13 (10^15 hundredths: 15 significant digits) a double names exactly one
# hundredth, so the float of a JSON number with two decimals round-trips to its cents.
EXACT_FLOAT_LIMIT = 1e13
_EXACT_CENTS = 10**15  # EXACT_FLOAT_LIMIT in hundredths


def cents_from_json(value: object) -> int:
    """Hundredths from a JSON number (as parsed: int or float) or a decimal string.

    A float is read through its shortest repr, which is the text the JSON carried for any
    number of at most 15 significant digits; more than two decimals is refused, not rounded.
    """
    if isinstance(value, float):
        # Fast path: the float is exactly the nearest double to some hundredth.
        if abs(value) < EXACT_FLOAT_LIMIT:
            cents = round(value * 100)
            if cents / 100 == value:
                return cents
        text = repr(value)
    elif isinstance(value, bool):
        raise ValueError("balance must be a number")
    elif isinstance(value, int):
        return value * 100
    elif isinstance(value, str | Decimal):
        text = str(value)
    else:
        raise ValueError("balance must be a number")
    try:
        exact = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"balance {text!r} is not a number") from None
    if not exact.is_finite():
        raise ValueError("balance must be finite")
    hundredths = exact.scaleb(2)
    if hundredths != hundredths.to_integral_value():
        raise ValueError(f"balance {text} has more than 2 decimals")
    return int(hundredths)


def cents_to_decimal(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def utc_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware time, exactly (no float)."""
    if moment.tzinfo is None:
        raise ValueError(f"time {moment.isoformat()} has no timezone")
    return (moment - _EPOCH) // _MICROSECOND


def from_utc_micros(us: int) -> datetime:
    """The time `us` microseconds after the epoch, in UTC (utc_micros' inverse)."""
    return _EPOCH + us * _MICROSECOND


def exact_amount(cents: int) -> int | float | Decimal:
    """The amount as a number that JSON encoders write with its exact decimal text.

    Below 10^13 a value of at most two decimals is the double nearest to it, and the
    shortest repr of that double (what msgspec and orjson write) is that very text:
    12505 → 125.05, -5 → -0.05. Larger amounts stay Decimal. Arithmetic never uses these:
    sums and comparisons run on the integer cents.
    """
    if cents % 100 == 0:
        return cents // 100
    if -_EXACT_CENTS < cents < _EXACT_CENTS:
        return cents / 100
    return Decimal(cents).scaleb(-2)


def looks_like_guid(text: object) -> bool:
    """8-4-4-4-12 with dashes in place: cheap enough for a million rows per run.

    Hex digits are not checked here; Engage refuses such a contact id in `notAccepted`,
    and that refusal is recorded like any other.
    """
    return (
        type(text) is str and len(text) == 36
        and text[8] == text[13] == text[18] == text[23] == "-"
    )
