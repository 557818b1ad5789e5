"""A point transaction request, validated before anything is recorded or sent.

Every entry point (the `pointsync.add_points` task, the webhook receiver, the CLI) builds
its request here, so the rules and their messages are the same everywhere. Each message
starts with the argument's name and says the rule it broke.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Any

from worker.base.arguments import InvalidArgument
from worker.base.money import EXACT_FLOAT_LIMIT, cents_to_decimal

MAX_DESCRIPTION = 100  # Treazure refuses a longer context.comment (contract §2)
MAX_REFERENCE = 64
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Printable, no spaces: a reference travels as Treazure's receiptNr and in URLs and logs.
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")
_MAX_DIGITS = len(str(int(EXACT_FLOAT_LIMIT))) - 1  # amounts below 10^13
# Wide enough for any valid amount (13 + 2 digits); anything it must round had more decimals.
_EXACT = Context(prec=40, traps=[Inexact, Overflow, InvalidOperation])
SOURCES = frozenset({"task", "webhook", "cli"})


@dataclass(frozen=True)
class PointRequest:
    contact_id: str
    amount_cents: int  # + loads, - redeems
    description: str
    reference: str

    @property
    def amount(self) -> Decimal:
        return cents_to_decimal(self.amount_cents)


def new_reference() -> str:
    return f"pts-{uuid.uuid4().hex}"


def validate_contact_id(value: Any) -> str:
    if not isinstance(value, str) or not _GUID.fullmatch(value):
        raise InvalidArgument(
            f"contact_id: must be a GUID like 6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f, "
            f"got {_shown(value)}")
    return value


def amount_cents(value: Any) -> int:
    """Exact hundredths of a finite, non-zero amount with at most 2 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidArgument(f"amount: must be a number, got {_shown(value)}")
    # A float is read through its shortest repr: the text a JSON number carried.
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        if "_" in text:  # Decimal() would take 1_000; no API writes numbers so
            raise InvalidOperation
        exact = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument(f"amount: must be a decimal number, got {_shown(value)}") from None
    if not exact.is_finite():
        raise InvalidArgument("amount: must be finite")
    if exact.is_zero():
        raise InvalidArgument("amount: must not be zero")
    if exact.adjusted() >= _MAX_DIGITS:
        raise InvalidArgument(f"amount: must be smaller than {EXACT_FLOAT_LIMIT:,.0f} in size")
    try:
        # Exact or refused: the default context would round beyond 28 digits.
        hundredths = exact.scaleb(2, context=_EXACT)
    except Inexact:
        hundredths = Decimal("0.5")  # not integral: refused just below
    if hundredths != hundredths.to_integral_value():
        raise InvalidArgument(f"amount: at most 2 decimals are allowed, got {_shown(text)}")
    return int(hundredths)


def validate_description(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("description: is required (1 to 100 characters)")
    if len(value) > MAX_DESCRIPTION:
        # Never truncated: Treazure refuses a longer comment, and a cut one would mislead.
        raise InvalidArgument(
            f"description: at most {MAX_DESCRIPTION} characters, got {len(value)}")
    return value


def validate_reference(value: Any, fallback: str | None = None) -> str:
    """The caller's reference; without one, `fallback` (a task's id-derived reference, the
    same on every delivery of the message) or, outside a task, a fresh one."""
    if value is None or value == "":
        return fallback or new_reference()
    if not isinstance(value, str) or len(value) > MAX_REFERENCE or not _REFERENCE.fullmatch(value):
        raise InvalidArgument(
            f"reference: must be 1 to {MAX_REFERENCE} letters, digits or . _ : - "
            f"(starting with a letter or digit), got {_shown(value)}")
    return value


def validate_request(
    contact_id: Any, amount: Any, description: Any, reference: Any = None,
    fallback_reference: str | None = None,
) -> PointRequest:
    """The request, or InvalidArgument naming the first argument that breaks a rule."""
    return PointRequest(
        contact_id=validate_contact_id(contact_id),
        amount_cents=amount_cents(amount),
        description=validate_description(description),
        reference=validate_reference(reference, fallback_reference),
    )


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
