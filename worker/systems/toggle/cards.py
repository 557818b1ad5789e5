"""Card numbers and money as Toggle has them: the issuer's number rule, the masked form
shown everywhere, and exact conversion between currency units and minor units."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from worker.base.money import cents_to_decimal

ISSUER_PREFIX = "63011900"
CARD_NUMBER_LENGTH = 19
_CARD_NUMBER = re.compile(rf"{ISSUER_PREFIX}\d{{{CARD_NUMBER_LENGTH - len(ISSUER_PREFIX)}}}")
# The contract's masked form groups a 19-digit number 4-4-4-3-4: `6301 19•• •••• ••• 6946`.
_GROUPS_19 = (4, 4, 4, 3, 4)
MASK = "•"


def valid_card_number(text: str) -> bool:
    """A number Toggle issued: 19 digits starting 63011900 (TOGGLE_VALIDATE_CARD_NUMBER)."""
    return _CARD_NUMBER.fullmatch(text) is not None


def mask_card_number(text: str | None) -> str:
    """First 6 and last 4 shown, the rest masked. Numbers shorter than 16 (moved cards'
    aliases) show the last 4 only, so a short number is never shown almost whole."""
    if not text:
        return ""
    chars = "".join(text.split())
    shown_head = 6 if len(chars) >= 16 else 0
    shown_tail = min(4, max(0, len(chars) - 4))
    masked = (chars[:shown_head] + MASK * (len(chars) - shown_head - shown_tail)
              + chars[len(chars) - shown_tail:])
    groups = _GROUPS_19 if len(masked) == 19 else (4,) * (len(masked) // 4 + 1)
    parts, at = [], 0
    for size in groups:
        if at >= len(masked):
            break
        parts.append(masked[at:at + size])
        at += size
    return " ".join(parts)


# Toggle's currencies have two decimals (`currency.denomination: 100`) [assumed for all].
MINOR_PER_UNIT = 100


def to_minor(value: str | Decimal | int) -> int:
    """Minor units (pence) of a currency amount ("10.00", Decimal, int), exactly; more
    than two decimals, floats and non-numbers are refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise ValueError("an amount must be a decimal string, Decimal or int (not a float)")
    try:
        exact = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount") from None
    if not exact.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    minor = exact.scaleb(2)
    if minor != minor.to_integral_value():
        raise ValueError(f"{value} has more than 2 decimals")
    return int(minor)


def from_minor(minor: int) -> Decimal:
    """The currency amount of `minor` units: 1000 → Decimal('10.00')."""
    return cents_to_decimal(minor)


def format_minor(minor: int) -> str:
    """"10.00" for 1000: how amounts are shown and put in task results."""
    return f"{from_minor(minor):.2f}"
