"""Time in the sim: integer microseconds since the epoch inside, ISO-8601 with `Z` on the wire."""

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def now_us() -> int:
    """The current time, cut to milliseconds like the stamps a real API hands out."""
    return time.time_ns() // 1_000_000 * 1000


def parse_us(text: object) -> int:
    """An ISO-8601 time that names its zone (`Z` or an offset) → microseconds; else ValueError."""
    if not isinstance(text, str):
        raise ValueError("a time must be an ISO-8601 string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone; use Z")
    return (moment - _EPOCH) // _MICROSECOND


def format_us(us: int) -> str:
    """UTC with `Z`, keeping only the precision the value has: seconds, milliseconds or µs."""
    text = (_EPOCH + us * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = us % 1_000_000
    if fraction == 0:
        return text + "Z"
    if fraction % 1000 == 0:
        return f"{text}.{fraction // 1000:03d}Z"
    return f"{text}.{fraction:06d}Z"
