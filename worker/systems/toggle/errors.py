"""How Toggle's failures reach the flows, on the three classes of worker/base/http.py.

GraphQL errors come at HTTP 200 as strings meant to be shown verbatim, with no codes; the
messages the contract names are matched here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.base.http import Ambiguous, Rejected, Retryable

SERVICE = "toggle"

DUPLICATE_REFERENCE = "Duplicate reference supplied"
UNAUTHORIZED = "Unauthorized"
THROTTLED = "Throttled"
VALIDATION = "validation"


class ToggleRefused(Rejected):
    """Toggle refused the request and applied nothing; `message` is Toggle's, verbatim,
    `validation` its field → messages map (empty when it gave none)."""

    def __init__(self, message: str, validation: Mapping[str, Sequence[str]] | None = None,
                 *, customer_facing: bool | None = None, status: int | None = 200) -> None:
        self.message = message
        self.validation = {k: list(v) for k, v in (validation or {}).items()}
        self.customer_facing = customer_facing
        detail = message
        if self.validation:
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in self.validation.items())
            detail = f"{message} ({fields})"
        super().__init__(SERVICE, detail, status)


class DuplicateReference(ToggleRefused):
    """The merchant_transaction_reference was used before; this request created nothing.
    Look up what the reference did create (`line_items_for`, `orders(reference=…)`)."""


class ToggleUnauthorized(Rejected):
    """Still `Unauthorized` after logging in once more."""


class ThrottledTooLong(Retryable):
    """Still `Throttled` after waiting for the missing credits several times."""


class AnswerLost(Ambiguous):
    """A mutation was sent and its answer lost (timeout, reset, 5xx): it may or may not have
    been applied. Never send it again as is: look its reference up first."""

    def __init__(self, detail: str, reference: str | None, status: int | None = None) -> None:
        self.reference = reference
        super().__init__(SERVICE, detail, status)


def refusal(errors: Sequence[Any], status: int | None = 200) -> ToggleRefused:
    """The error for a GraphQL `errors` list: the first message, verbatim."""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or "error without a message")
    validation = first.get("validation")
    if not isinstance(validation, dict):
        validation = {}
    validation = {str(k): v if isinstance(v, list) else [str(v)] for k, v in validation.items()}
    cls = DuplicateReference if message == DUPLICATE_REFERENCE else ToggleRefused
    return cls(message, validation, customer_facing=first.get("customer_facing"),
               status=status)


def error_messages(body: Mapping[str, Any]) -> list[str]:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return [str(e.get("message")) for e in errors if isinstance(e, dict)]
