"""Toggle's refusals: descriptive strings meant to be shown verbatim, no codes."""

from typing import Any

from graphql import GraphQLError

DUPLICATE = "Duplicate reference supplied"
NEGATIVE = ("Applying this transaction would have resulted in a negative balance. "
            "Transaction not applied.")
NO_CARD = ("No card has been found for this account for the card ref supplied. "
           "Transaction not applied.")
UNKNOWN_SITE = "The external_site_id supplied was not recognised for this account."
INVALID_CREDENTIALS = "Invalid credentials"
UNAUTHORIZED = "Unauthorized"
THROTTLED = "Throttled"
VALIDATION = "validation"


class ToggleError(Exception):
    """Raised by a resolver: the field answers null and the error is shown as Toggle shows it."""

    def __init__(self, message: str, validation: dict[str, list[str]] | None = None,
                 customer_facing: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.validation = validation
        self.customer_facing = customer_facing


def invalid(field: str, problem: str) -> ToggleError:
    return ToggleError(VALIDATION, {field: [problem]})


def formatted(error: GraphQLError) -> dict[str, Any]:
    """Toggle's error shape for our refusals; a GraphQL server's for parse/validation errors."""
    original = error.original_error
    if isinstance(original, ToggleError):
        shown: dict[str, Any] = {"message": original.message,
                                 "customer_facing": original.customer_facing}
        if original.validation is not None:
            shown["validation"] = original.validation
        return shown
    return {**error.formatted, "customer_facing": False}
