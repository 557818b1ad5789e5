"""Money at the JSON boundary: exact cents in, exact decimal text out, times with offsets."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from worker.base.money import cents_from_json, exact_amount, utc_micros


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        (1250.5, 125050),
        (19.99, 1999),  # int(19.99 * 100) would be 1998
        (0.29, 29),  # 0.29 * 100 == 28.999999999999996
        (-0.05, -5),
        (1e2, 10000),
        (12, 1200),
        (-3, -300),
        (0, 0),
        ("1250.50", 125050),
        ("-0.05", -5),
        ("7", 700),
        (Decimal("12.34"), 1234),
        (123456789012.34, 12345678901234),
    ],
)
def test_cents_are_exact(value: object, cents: int) -> None:
    result = cents_from_json(value)

    assert result == cents
    assert type(result) is int


@pytest.mark.parametrize("value", [1.005, 0.1 + 0.2, "1.234", "0.001", Decimal("2.345")])
def test_more_than_two_decimals_is_refused_not_rounded(value: object) -> None:
    with pytest.raises(ValueError, match="more than 2 decimals"):
        cents_from_json(value)


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_refused(value: bool) -> None:
    with pytest.raises(ValueError):
        cents_from_json(value)


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, "abc", "", "NaN", float("inf")])
def test_non_numbers_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        cents_from_json(value)


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (125050, "1250.5"),
        (-5, "-0.05"),
        (300, "3"),
        (0, "0"),
        (1, "0.01"),
        (10, "0.1"),
        (1010, "10.1"),
        (-125050, "-1250.5"),
        (-100, "-1"),
        (123456789012345, "1234567890123.45"),
    ],
)
def test_exact_amount_prints_the_exact_decimal(cents: int, text: str) -> None:
    assert str(exact_amount(cents)) == text


@pytest.mark.parametrize("cents", [0, 1, -1, 99, -99, 100, 125050, -125050, 987654321])
def test_text_reads_back_to_the_same_cents(cents: int) -> None:
    assert cents_from_json(str(exact_amount(cents))) == cents


def parse_utc_micros(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


def test_time_with_z_suffix() -> None:
    expected = int(datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC).timestamp()) * 1_000_000

    assert parse_utc_micros("2026-11-21T09:14:03Z") == expected


def test_time_keeps_microseconds_exactly() -> None:
    base = parse_utc_micros("2026-11-21T09:14:03Z")

    assert parse_utc_micros("2026-11-21T09:14:03.000007Z") == base + 7
    assert parse_utc_micros("2026-11-21T09:14:03.123456+00:00") == base + 123456


def test_time_with_offset_is_converted_to_utc() -> None:
    assert parse_utc_micros("2026-11-21T10:14:03+01:00") == parse_utc_micros(
        "2026-11-21T09:14:03Z"
    )


def test_time_without_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_utc_micros("2026-11-21T09:14:03")


def test_time_that_is_not_iso_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_utc_micros("21/11/2026 09:14")
