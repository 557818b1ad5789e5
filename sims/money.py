"""Points as integer cents: exact in, exact out (the contract allows two decimals at most)."""

import math

# JSON text of every possible cents remainder, trailing zeros dropped: "", ".01", ..., ".5", ...
_FRACTIONS = ["", *(f".{cents:02d}".rstrip("0") for cents in range(1, 100))]


def cents_to_json(cents: int) -> str:
    """The exact JSON number for an amount held in cents: 125050 → "1250.5", 700 → "7"."""
    if cents < 0:
        return "-" + cents_to_json(-cents)
    return f"{cents // 100}{_FRACTIONS[cents % 100]}"


def json_to_cents(value: object) -> int | None:
    """Cents of a parsed JSON number with at most two decimals; None for anything else.

    JSON numbers arrive as Python floats. A float is the nearest double to a 2-decimal number
    exactly when rounding its hundredfold and dividing back gives the same double, so this test
    is exact without going through Decimal (it runs for every row of every balance push).
    """
    if type(value) is int:  # not isinstance: a JSON true/false must not count as 1/0
        return value * 100
    if type(value) is float and math.isfinite(value):
        cents = round(value * 100)
        if cents / 100 == value:
            return cents
    return None
