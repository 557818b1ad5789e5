"""Flow 3: each contact's points history, fetched from Treazure and kept.

A fetch is incremental where the store has entries already: it asks Treazure for entries
from the newest stored one (contract §3, `from=`), and the store skips what it knows, so
fetching again never duplicates. Treazure errors follow the client's rules (retries with
backoff for 429, 5xx and dropped connections); an unknown account is `UnknownContact`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.base.http import Rejected, RemoteError
from worker.base.money import from_utc_micros
from worker.base.point_request import validate_contact_id
from worker.base.settings import Settings
from worker.flows.parts import Parts
from worker.store.database import Store
from worker.store.history import HistoryStore, MalformedHistory

log = logging.getLogger("pointsync.history")


class UnknownContact(LookupError):
    """Treazure has no account for this contact (it answered 404)."""


async def fetch_history(parts: Parts, contact_id: str) -> dict[str, Any]:
    """Fetch one contact's history (incrementally when some is stored) and keep it."""
    contact_id = validate_contact_id(contact_id)
    store = HistoryStore(parts.store)
    known = store.fetched(contact_id)
    since = None
    if known is not None and known.newest_at_us is not None:
        since = from_utc_micros(known.newest_at_us)
    try:
        entries = await parts.treazure.history(contact_id, since)
    except Rejected as exc:
        if exc.status == 404:
            raise UnknownContact(f"contact_id: Treazure has no account {contact_id}") from None
        raise
    added = store.save(contact_id, entries)
    return {"contact_id": contact_id, "received": len(entries), "added": added,
            "incremental": since is not None}


async def fetch_many(parts: Parts, contact_ids: Sequence[str], concurrency: int) -> dict[str, int]:
    """Fetch many contacts' histories, at most `concurrency` requests at once; one
    contact's failure is counted and logged, and does not stop the others."""
    gate = asyncio.Semaphore(concurrency)
    counts = {"contacts": len(contact_ids), "added": 0, "unknown": 0, "failed": 0}

    async def one(contact_id: str) -> None:
        async with gate:
            try:
                # Awaited first: `counts[...] += await ...` would read the count before the
                # await and write it back after, losing the other fetches' additions.
                added = (await fetch_history(parts, contact_id))["added"]
            except UnknownContact:
                counts["unknown"] += 1
            except (RemoteError, MalformedHistory, ValueError) as exc:
                counts["failed"] += 1
                log.warning("history of %s not fetched: %s", contact_id, exc)
            else:
                counts["added"] += added

    await asyncio.gather(*(one(c) for c in contact_ids))
    return counts


async def fetch_for_a_while(
    parts: Parts, contact_ids: Sequence[str], concurrency: int, seconds: float
) -> tuple[dict[str, int], list[str]]:
    """Fetch in waves until about `seconds` have passed; returns the counts and the
    contacts not started. A chunk task that stops early and queues the rest again frees
    its worker process often, so a sync queued meanwhile (at a higher priority) waits at
    most about that long for a process."""
    deadline = time.monotonic() + seconds
    wave = concurrency * 4
    totals = {"contacts": 0, "added": 0, "unknown": 0, "failed": 0}
    done = 0
    while done < len(contact_ids) and (done == 0 or time.monotonic() < deadline):
        counts = await fetch_many(parts, contact_ids[done:done + wave], concurrency)
        for key, value in counts.items():
            totals[key] += value
        done += wave
    return totals, list(contact_ids[done:])


def purge(store: Store, settings: Settings) -> int:
    """Apply HISTORY_RETENTION_DAYS: delete entries older than that (store work only: no
    Treazure, Redis or event loop needed)."""
    cutoff = datetime.now(UTC) - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    removed = HistoryStore(store).purge_before(cutoff)
    log.info("history retention: %d entries older than %s removed", removed, cutoff.date())
    return removed
