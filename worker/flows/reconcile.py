"""Flow 4b: reconciliation — compare Engage with Treazure for given contacts, and heal.

A contact drifts when Engage's balance differs from Treazure's, or Engage has no point
account for a contact Treazure knows. Each drifting contact is read a second time before it
is reported: a transaction booked between the two reads of the first pass would otherwise
show as drift that is not there.

Healing holds the sync's run lock (waiting for a running sync to finish), so a heal and a
sync never push the same contact at once, and pushes Treazure's balance through the sync's
own lanes (`sync.push_entries`): the same per-contact claims, no-stale-overwrite guard,
batches and shared rate limit. Each balance is stamped with Treazure's own time for it:
the newest entry of the account's history (its balance after that movement and when), as
a Balances/Get row would carry it. So a newer balance sent meanwhile by a sync or a
transaction wins over it, whatever the clocks of the machines involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.base.http import RemoteError
from worker.base.money import cents_from_json, exact_amount, utc_micros
from worker.flows.parts import Parts
from worker.flows.sync.locking import under_run_lock
from worker.flows.sync.push import push_entries
from worker.flows.sync.summary import SyncSummary
from worker.systems.treazure.parsing import BalanceEntry

READ_CONCURRENCY = 8
# A heal waits this long for a running sync (or migration) to release the run lock.
HEAL_LOCK_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class Reading:
    contact_id: str
    treazure: Decimal | None  # None: Treazure has no such account
    engage: Decimal | None  # None: Engage has no point account for it

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
    treazure, engage = await asyncio.gather(parts.treazure.get_balance(contact_id),
                                            parts.engage.get_balance(contact_id))
    return Reading(contact_id, treazure, engage)


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


async def heal(
    parts: Parts, report: ReconcileReport, *, wait_seconds: float = HEAL_LOCK_WAIT_SECONDS
) -> SyncSummary:
    """Set Treazure's balance in Engage for every healable drift in the report.

    Holds the run lock, waiting up to `wait_seconds` for a running sync; still held by
    then, the heal is recorded `skipped` and nothing is pushed.
    """
    contact_ids = [r.contact_id for r in report.drift if r.treazure is not None]

    async def locked(summary: SyncSummary) -> None:
        entries = await treazure_balances(parts, contact_ids, report.errors)
        await push_entries(parts.settings, parts.store, parts.engage, parts.guard, entries,
                           kind="heal", summary=summary)

    report.heal = await under_run_lock(parts.settings, parts.store, parts.redis, locked,
                                       kind="heal", wait_seconds=wait_seconds)
    return report.heal


async def treazure_balances(
    parts: Parts, contact_ids: list[str], errors: dict[str, str],
    concurrency: int = READ_CONCURRENCY,
) -> list[BalanceEntry]:
    """Each contact's balance as Treazure stamped it (its history's newest entry); why
    one could not be had goes to `errors`."""
    gate = asyncio.Semaphore(concurrency)

    async def read(contact_id: str) -> BalanceEntry | None:
        async with gate:
            try:
                entry = newest_balance(contact_id, await parts.treazure.history(contact_id))
            except RemoteError as exc:
                errors[contact_id] = str(exc)[:200]
                return None
        if entry is None:
            errors[contact_id] = "Treazure's history has no well-formed newest entry to " \
                                 "date its balance by"
        return entry

    found = await asyncio.gather(*(read(cid) for cid in contact_ids))
    return [entry for entry in found if entry is not None]


def newest_balance(contact_id: str, history: list[dict[str, Any]]) -> BalanceEntry | None:
    """The balance after the newest movement of a history (oldest first), and its time;
    None when there is none, or it is malformed (an older one is not today's balance)."""
    if not history:
        return None
    newest = history[-1]
    try:
        at = datetime.fromisoformat(newest["dateTime"])
        cents = cents_from_json(newest["balance"])
        return BalanceEntry(contact_id, cents, utc_micros(at), at, exact_amount(cents))
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None
