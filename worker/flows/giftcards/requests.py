"""Gift-card requests, validated before anything is recorded or sent.

Values are taken in currency units ("10.00", Decimal, int; a float through its shortest
text, as JSON carried it) and kept in Toggle's minor units, exactly. Each message starts
with the argument's name and says the rule it broke (as worker/base/point_request does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.base.arguments import InvalidArgument
from worker.base.point_request import (
    MAX_DESCRIPTION,
    MAX_REFERENCE,
    validate_contact_id,
    validate_description,
    validate_reference,
)
from worker.systems.toggle.cards import to_minor, valid_card_number

if TYPE_CHECKING:
    from worker.base.settings import Settings

# GraphQL's Int is 32-bit: Toggle cannot hold a larger value.
MAX_VALUE_MINOR = 2**31 - 1
MAX_EMAIL = 254
MAX_TEXT = 500  # message printed on / emailed with the card, and the order's note
# A redemption's reference carries `-points` / `-refund` into the points ledger (≤ 64).
MAX_REDEEM_REFERENCE = MAX_REFERENCE - len("-refund")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


@dataclass(frozen=True)
class CardRequest:
    value_minor: int
    email: str | None
    reference: str
    message: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RedeemRequest:
    contact_id: str
    points_cents: int  # taken from the contact's points (positive)
    value_minor: int
    email: str
    description: str
    reference: str


@dataclass(frozen=True)
class AdjustRequest:
    card_reference: str
    value_minor: int  # negative redeems, positive tops up
    site: str
    site_reference: str
    reference: str


def value_minor(value: Any, name: str = "value", *, signed: bool = False) -> int:
    """Exact minor units of a currency amount with at most 2 decimals (> 0 unless
    `signed`, then ≠ 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidArgument(f"{name}: must be an amount like 10.00, got {_shown(value)}")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        if "_" in text:
            raise ValueError(text)
        minor = to_minor(text)
    except ValueError:
        raise InvalidArgument(
            f"{name}: must be an amount with at most 2 decimals, got {_shown(value)}") from None
    if minor == 0 or (minor < 0 and not signed):
        rule = "must not be zero" if signed else "must be more than 0"
        raise InvalidArgument(f"{name}: {rule}, got {_shown(value)}")
    if abs(minor) > MAX_VALUE_MINOR:
        raise InvalidArgument(f"{name}: must be at most {MAX_VALUE_MINOR / 100:,.2f}")
    return minor


def validate_email(value: Any, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidArgument("email: is required (Toggle emails the card to it)")
        return None
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise InvalidArgument(f"email: must be an email address like guest@example.com, "
                              f"got {_shown(value)}")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidArgument(f"{name}: at most {MAX_TEXT} characters of text")
    return value


def validate_card_request(value: Any, email: Any = None, reference: Any = None,
                          message: Any = None, note: Any = None,
                          fallback_reference: str | None = None) -> CardRequest:
    """The request, or InvalidArgument naming the first argument that breaks a rule."""
    return CardRequest(
        value_minor=value_minor(value),
        email=validate_email(email, required=False),
        reference=validate_reference(reference, fallback_reference),
        message=_text(message, "message"),
        note=_text(note, "note"),
    )


def validate_redeem_request(contact_id: Any, points: Any, value: Any, email: Any,
                            description: Any = None, reference: Any = None,
                            fallback_reference: str | None = None) -> RedeemRequest:
    contact = validate_contact_id(contact_id)
    points_cents = value_minor(points, "points")  # Treazure's points have 2 decimals too
    minor = value_minor(value)
    address = validate_email(email, required=True)
    assert address is not None
    ref = validate_reference(reference, fallback_reference)
    if len(ref) > MAX_REDEEM_REFERENCE:
        raise InvalidArgument(f"reference: at most {MAX_REDEEM_REFERENCE} characters for a "
                              f"redemption (it is extended by -points), got {len(ref)}")
    if description is None or description == "":
        description = f"gift card {ref}"[:MAX_DESCRIPTION]
    return RedeemRequest(contact_id=contact, points_cents=points_cents, value_minor=minor,
                         email=address, description=validate_description(description),
                         reference=ref)


def validate_site(site: Any, settings: Settings) -> str:
    """The Toggle site reference of a site name from TOGGLE_SITES."""
    if not isinstance(site, str) or site not in settings.TOGGLE_SITES:
        known = ", ".join(sorted(settings.TOGGLE_SITES)) or "none configured"
        raise InvalidArgument(f"site: must be one of TOGGLE_SITES ({known}), got {_shown(site)}")
    return settings.TOGGLE_SITES[site]


def validate_card_reference(value: Any, settings: Settings) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("card: a card number is required")
    number = "".join(value.split())
    if settings.TOGGLE_VALIDATE_CARD_NUMBER and not valid_card_number(number):
        raise InvalidArgument("card: must be 19 digits starting 63011900 (switch "
                              "TOGGLE_VALIDATE_CARD_NUMBER off for cards moved from another "
                              "provider)")
    if len(number) > 64 or not number.isalnum():
        raise InvalidArgument("card: must be letters and digits, at most 64")
    return number


def validate_adjust_request(card_reference: Any, value: Any, site: Any, reference: Any = None,
                            fallback_reference: str | None = None,
                            settings: Settings | None = None) -> AdjustRequest:
    """A redemption (negative value) or top-up (positive) at a site."""
    if settings is None:
        from worker.base.settings import get_settings
        settings = get_settings()
    site_reference = validate_site(site, settings)
    return AdjustRequest(
        card_reference=validate_card_reference(card_reference, settings),
        value_minor=value_minor(value, signed=True),
        site=site, site_reference=site_reference,
        reference=validate_reference(reference, fallback_reference),
    )


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
