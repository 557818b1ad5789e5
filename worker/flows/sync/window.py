"""The window a sync run reads: from the last success less an overlap to a little ahead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.base.arguments import InvalidArgument
from worker.base.settings import Settings


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    explicit: bool


def parse_time_argument(name: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: must be an ISO-8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise InvalidArgument(f"{name}: must name its timezone (e.g. 2026-11-21T08:00:00Z)")
    return moment


def compute_window(
    settings: Settings,
    now: datetime,
    watermark: datetime | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Window:
    """No gap: from the last success less an overlap (first run: the last 2 h) to now + 2 h."""
    if watermark is None:
        default_start = now - timedelta(seconds=settings.SYNC_FIRST_WINDOW_SECONDS)
    else:
        default_start = watermark - timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
    start = since or default_start
    end = until or now + timedelta(seconds=settings.SYNC_LOOKAHEAD_SECONDS)
    if start >= end:
        raise InvalidArgument(f"since: must be before until ({start:%Y-%m-%dT%H:%M:%SZ} "
                              f">= {end:%Y-%m-%dT%H:%M:%SZ})")
    return Window(start, end, explicit=since is not None or until is not None)
