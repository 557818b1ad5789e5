"""Flow 4b: reconciliation — compare Engage with Treazure for given contacts, and heal.

A contact drifts when Engage's balance differs from Treazure's, or Engage has no point
account for a contact Treazure knows. Each drifting contact is read a second time before it
is reported: a transaction booked between the two reads of the first pass would otherwise
show as drift that is not there.

Healing pushes Treazure's balance through the sync's own lanes (`sync.push_entries`): the
same per-contact claims, no-stale-overwrite guard, batches and shared rate limit. Each
balance is stamped with the moment just before Treazure was read, so a newer balance sent
meanwhile by a sync or a transaction wins over it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.http import RemoteError
from worker.money import cents_from_json, exact_amount, from_utc_micros
from worker.parts import Parts
from worker.sync import SyncSummary, push_entries
from worker.treazure import BalanceEntry

READ_CONCURRENCY = 8


@dataclass(frozen=True)
class Reading:
    contact_id: str
    treazure: Decimal | None  # None: Treazure has no such account
    engage: Decimal | None  # None: Engage has no point account for it
    read_us: int  # just before Treazure was read: the balance is at least this new

    @property
    def drift(self) -> str | None:
        """Why this contact drifts, or None when both sides agree."""
        if self.treazure is None:
            return None if self.engage is None else "unknown in Treazure"
        if self.engage is None:
            return "missing in Engage"
        return "differs" if self.treazure != self.engage else None


@dataclass
class ReconcileReport:
    checked: int = 0
    drift: list[Reading] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # in neither system
    errors: dict[str, str] = field(default_factory=dict)
    heal: SyncSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "drift": [{"contact_id": r.contact_id, "reason": r.drift,
                       "treazure": _text(r.treazure), "engage": _text(r.engage)}
                      for r in self.drift],
            "unknown": self.unknown,
            "errors": self.errors,
            "healed": None if self.heal is None else {
                "status": self.heal.status, "run_id": self.heal.run_id,
                "pushed": self.heal.counts.pushed, "stale": self.heal.counts.stale,
                "rejected": self.heal.counts.rejected, "error": self.heal.error},
        }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


async def read_both(parts: Parts, contact_id: str) -> Reading:
    read_us = time.time_ns() // 1000
    treazure, engage = await asyncio.gather(parts.treazure.get_balance(contact_id),
                                            parts.engage.get_balance(contact_id))
    return Reading(contact_id, treazure, engage, read_us)


async def compare(
    parts: Parts,
    contact_ids: Iterable[str],
    *,
    progress: Callable[[int], None] | None = None,
    concurrency: int = READ_CONCURRENCY,
) -> ReconcileReport:
    """Read both sides for every contact; report those that drift in two reads."""
    report = ReconcileReport()
    gate = asyncio.Semaphore(concurrency)

    async def check(contact_id: str) -> None:
        async with gate:
            try:
                reading = await read_both(parts, contact_id)
                if reading.drift is not None:
                    reading = await read_both(parts, contact_id)  # still drifting?
            except RemoteError as exc:
                report.errors[contact_id] = str(exc)[:200]
                return
        report.checked += 1
        if progress is not None:
            progress(report.checked + len(report.errors))
        if reading.drift is not None:
            report.drift.append(reading)
        elif reading.treazure is None:
            report.unknown.append(contact_id)

    await asyncio.gather(*(check(cid) for cid in dict.fromkeys(contact_ids)))
    report.drift.sort(key=lambda r: r.contact_id)
    return report


async def heal(parts: Parts, report: ReconcileReport) -> SyncSummary:
    """Set Treazure's balance in Engage for every healable drift in the report."""
    entries = [_entry(r) for r in report.drift if r.treazure is not None]
    report.heal = await push_entries(parts.settings, parts.store, parts.engage, parts.guard,
                                     entries, kind="heal")
    return report.heal


def _entry(reading: Reading) -> BalanceEntry:
    assert reading.treazure is not None
    cents = cents_from_json(reading.treazure)
    return BalanceEntry(reading.contact_id, cents, reading.read_us,
                        from_utc_micros(reading.read_us), exact_amount(cents))
