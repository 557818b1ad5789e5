"""Reading a relayed webhook's body: the parts every source's envelope shares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


class NotAnObject(ValueError):
    """The body is not a JSON object; the message names the field and the rule."""


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or NotAnObject."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise NotAnObject("body: not valid JSON") from None
    if not isinstance(value, dict):
        raise NotAnObject("body: must be a JSON object")
    return value


def event_time(value: Any, fallback: datetime) -> datetime:
    """An event's creation time, ISO 8601 (naive read as UTC) or Unix seconds; `fallback`
    when absent or unreadable (the event is then placed when it was received)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return fallback
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback
