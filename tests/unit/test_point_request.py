"""The point transaction rules every entry point shares (task, webhook, CLI)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from worker.base.arguments import InvalidArgument
from worker.base.point_request import (
    PointRequest,
    amount_cents,
    validate_contact_id,
    validate_description,
    validate_reference,
    validate_request,
)

GUID = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return str(caught.value)


def test_a_valid_request_keeps_every_argument() -> None:
    request = validate_request(GUID, "25.50", "Birthday bonus", "evt_1")
    assert request == PointRequest(GUID, 2550, "Birthday bonus", "evt_1")
    assert request.amount == Decimal("25.50")


# -- contact_id -----------------------------------------------------------------------------


def test_contact_id_accepts_a_guid_in_either_case() -> None:
    assert validate_contact_id(GUID) == GUID
    assert validate_contact_id(GUID.upper()) == GUID.upper()


@pytest.mark.parametrize("value", [
    "abc", "", None, 12345, "{" + GUID + "}", GUID + " ", GUID.replace("-", ""),
    "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6g",
])
def test_contact_id_must_be_a_guid(value: Any) -> None:
    message = refusal(validate_request, value, "1", "x")
    assert message.startswith("contact_id: ")
    assert "GUID" in message


# -- amount ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cents"), [
    (25, 2500), (-3, -300), ("2.50", 250), ("-10.5", -1050), (" 7 ", 700), ("1E+2", 10_000),
    (0.1, 10), (1250.5, 125_050), (-0.07, -7), (0.29, 29), (Decimal("19.99"), 1999),
    ("9999999999999.99", 999_999_999_999_999),
])
def test_amount_gives_exact_cents(value: Any, cents: int) -> None:
    assert amount_cents(value) == cents
    assert validate_request(GUID, value, "x").amount_cents == cents


@pytest.mark.parametrize(("value", "rule"), [
    (True, "must be a number"), (False, "must be a number"), (None, "must be a number"),
    ([1], "must be a number"), ("abc", "must be a decimal number"),
    ("", "must be a decimal number"), ("NaN", "must be finite"),
    ("Infinity", "must be finite"), (float("inf"), "must be finite"),
    (float("nan"), "must be finite"), (0, "must not be zero"), ("0.00", "must not be zero"),
    (0.0, "must not be zero"), ("1.005", "at most 2 decimals"), (0.001, "at most 2 decimals"),
    (1e13, "smaller than"), ("-10000000000000", "smaller than"), (10**13, "smaller than"),
    ("1e300", "smaller than"),
])
def test_amount_refusals_name_the_argument_and_the_rule(value: Any, rule: str) -> None:
    message = refusal(validate_request, GUID, value, "x")
    assert message.startswith("amount: ")
    assert rule in message


def test_amount_with_more_than_two_decimals_is_refused_not_rounded() -> None:
    for value in ("1.005", "2.499", 2.675):
        with pytest.raises(InvalidArgument, match="at most 2 decimals"):
            amount_cents(value)


@pytest.mark.parametrize(("value", "rule"), [
    ("1.000000000000000000000000000001", "at most 2 decimals"),  # beyond 28 digits
    (Decimal("2.50000000000000000000000000001"), "at most 2 decimals"),  # as the webhook parses
    ("1e999999", "smaller than"),
    ("1e-999999999", "at most 2 decimals"),
    ("1_000", "decimal number"),
])
def test_amount_refuses_long_huge_tiny_or_underscored_decimals(value: object, rule: str) -> None:
    message = refusal(amount_cents, value)
    assert message.startswith("amount: ") and rule in message


def test_amount_keeps_trailing_zeros_beyond_two_decimals_exact() -> None:
    assert amount_cents("12.500000000000000000000000000000000000000000000000000") == 1250


# -- description ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x", "d" * 100, "é" * 100, "🎁" * 100, " padded "])
def test_description_of_1_to_100_characters_is_kept_as_it_is(value: str) -> None:
    assert validate_description(value) == value
    assert validate_request(GUID, 1, value).description == value


def test_description_over_100_characters_is_refused_never_truncated() -> None:
    message = refusal(validate_request, GUID, 1, "d" * 101)
    assert message.startswith("description: ")
    assert "at most 100 characters" in message and "101" in message
    assert refusal(validate_description, "é" * 101).startswith("description: at most 100")


@pytest.mark.parametrize("value", ["", "   ", "\n\t", None, 5, ["x"]])
def test_description_is_required_text(value: Any) -> None:
    message = refusal(validate_request, GUID, 1, value)
    assert message.startswith("description: ")
    assert "required" in message


# -- reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_reference_is_generated_unique(value: Any) -> None:
    made = {validate_reference(value) for _ in range(50)}
    assert len(made) == 50
    assert all(re.fullmatch(r"pts-[0-9a-f]{32}", ref) for ref in made)
    assert re.fullmatch(r"pts-[0-9a-f]{32}", validate_request(GUID, 1, "x", value).reference)


@pytest.mark.parametrize("value", ["evt_2Kx.9:a-b", "a", "9", "r" * 64])
def test_a_valid_reference_is_kept(value: str) -> None:
    assert validate_reference(value) == value
    assert validate_request(GUID, 1, "x", value).reference == value


@pytest.mark.parametrize("value", [
    "r" * 65, "has space", " lead", "trail ", "-leading-dash", ".dot", "_under", "a/b",
    "a\nb", "ré", 42, b"bytes",
])
def test_reference_refusals_name_the_argument(value: Any) -> None:
    message = refusal(validate_request, GUID, 1, "x", value)
    assert message.startswith("reference: ")
    assert "1 to 64 letters, digits" in message


def test_the_first_broken_argument_is_named() -> None:
    assert refusal(validate_request, "abc", "abc", "", "bad ref").startswith("contact_id: ")
    assert refusal(validate_request, GUID, "abc", "", "bad ref").startswith("amount: ")
    assert refusal(validate_request, GUID, 1, "", "bad ref").startswith("description: ")


def test_a_call_without_reference_takes_the_fallback_every_time() -> None:
    # A task passes a reference derived from its id: every delivery of the message is the
    # same call and must name the same ledger row.
    first = validate_request(GUID, 5, "bonus", None, fallback_reference="pts-task-1")
    again = validate_request(GUID, 5, "bonus", "", fallback_reference="pts-task-1")
    assert first.reference == again.reference == "pts-task-1"
    given = validate_request(GUID, 5, "bonus", "mine", fallback_reference="pts-x")
    assert given.reference == "mine"
