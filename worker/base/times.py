"""Times as text: the one rendering of a moment that outside systems and our files share."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_seconds_text(moment: datetime) -> str:
    """`2026-11-21T08:00:00Z`: a timezone-aware time in UTC, to the second (what Treazure's
    window takes and the migration export writes)."""
    if moment.tzinfo is None:
        raise ValueError(f"time {moment.isoformat()} has no timezone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
