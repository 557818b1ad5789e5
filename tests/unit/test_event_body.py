"""The parts of a relayed webhook's body every source shares (worker/base/event_body.py)."""

from datetime import UTC, datetime

import pytest

from worker.base.event_body import NotAnObject, event_time, json_object

RECEIVED = datetime(2026, 11, 21, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "body: not valid JSON"),
    (b"[" * 100_000, "body: not valid JSON"),  # too deep for the parser
    (b"[1, 2]", "body: must be a JSON object"),
    (b'"text"', "body: must be a JSON object"),
])
def test_a_body_that_is_not_a_json_object_is_refused_naming_the_rule(
    body: bytes, message: str
) -> None:
    with pytest.raises(NotAnObject, match=message):
        json_object(body)


def test_a_json_object_is_read() -> None:
    assert json_object(b'{"id": 7, "data": {"object": null}}') == {
        "id": 7, "data": {"object": None}}


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-21T16:01:27.000000Z", datetime(2026, 11, 21, 16, 1, 27, tzinfo=UTC)),
    ("2026-11-21T16:01:27", datetime(2026, 11, 21, 16, 1, 27, tzinfo=UTC)),  # naive: UTC
    (1_795_276_887, datetime(2026, 11, 21, 16, 1, 27, tzinfo=UTC)),
    ("yesterday", RECEIVED),
    (None, RECEIVED),
    (True, RECEIVED),  # a bool is not a Unix time
    (1e300, RECEIVED),  # out of range
])
def test_an_events_time_or_when_it_was_received(value: object, expected: datetime) -> None:
    assert event_time(value, RECEIVED) == expected
