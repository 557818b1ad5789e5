"""What a run reports: its counters and its outcome."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counts:
    fetched: int = 0
    unique_contacts: int = 0
    unchanged: int = 0
    stale: int = 0
    pushed: int = 0
    rejected: int = 0


@dataclass
class SyncSummary:
    status: str
    run_id: int | None
    window_from: str | None = None
    window_to: str | None = None
    duration_seconds: float = 0.0
    counts: Counts = field(default_factory=Counts)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("counts"))
        return data
