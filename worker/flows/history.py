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
from worker.store.history import HistoryStore, MalformedHistory, Received
from worker.systems.treazure.history import HistoryReader

log = logging.getLogger("pointsync.history")


class UnknownContact(LookupError):
    """Treazure has no account for this contact (it answered 404)."""


async def fetch_history(parts: Parts, contact_id: str) -> dict[str, Any]:
    """Fetch one contact's history (incrementally when some is stored) and keep it."""
    contact_id = validate_contact_id(contact_id)
    store = HistoryStore(parts.store)
    since = since_of(store.newest_times([contact_id]).get(contact_id))
    try:
        entries = await parts.treazure.history(contact_id, since)
    except Rejected as exc:
        if exc.status == 404:
            raise UnknownContact(f"contact_id: Treazure has no account {contact_id}") from None
        raise
    added = store.save(contact_id, entries)
    return {"contact_id": contact_id, "received": len(entries), "added": added,
            "incremental": since is not None}


def since_of(newest_us: int | None) -> datetime | None:
    """Where a contact's next fetch starts: its newest stored entry (from= rounds it down to
    the second, so an entry is read twice and skipped, never lost)."""
    return None if newest_us is None else from_utc_micros(newest_us)


async def fetch_many(parts: Parts, contact_ids: Sequence[str], concurrency: int) -> dict[str, int]:
    """Fetch many contacts' histories, at most `concurrency` requests at once; one
    contact's failure is counted and logged, and does not stop the others."""
    counts, _ = await fetch_chunk(parts, contact_ids, concurrency, deadline=None)
    return counts


async def fetch_for_a_while(
    parts: Parts, contact_ids: Sequence[str], concurrency: int, seconds: float
) -> tuple[dict[str, int], list[str]]:
    """Fetch until about `seconds` have passed; returns the counts and the contacts not
    started. A chunk task that stops early and queues the rest again frees its worker
    process often, so a sync queued meanwhile (at a higher priority) waits at most about
    that long for a process."""
    return await fetch_chunk(parts, contact_ids, concurrency, time.monotonic() + seconds)


# A chunk writes what it fetched once, at its end; one with this many entries waiting
# writes them first (a chunk of long first-time histories stays small in memory).
WRITE_AT_ENTRIES = 20_000


async def fetch_chunk(
    parts: Parts, contact_ids: Sequence[str], concurrency: int, deadline: float | None
) -> tuple[dict[str, int], list[str]]:
    """One store read for the chunk's fetch state, its requests on one connection pool
    with `concurrency` in flight (none started after `deadline`, past the first
    `4 × concurrency`: every turn makes some progress), and one store write for every
    history fetched. Returns the counts and the contacts not started.

    A history is written only with the chunk's other histories: a chunk interrupted before
    its write leaves the store as it was, and the next refresh asks for the same entries
    again (the newest stored time moves only with the entries it covers)."""
    store = HistoryStore(parts.store)
    ids = list(contact_ids)
    counts = {"contacts": 0, "added": 0, "unknown": 0, "failed": 0}
    known = store.newest_times([c for c in ids if valid_contact_id(c)])
    fetched: dict[str, Received] = {}
    waiting = 0  # entries fetched and not written yet
    started = 0
    at_least = concurrency * 4

    def write() -> None:
        nonlocal waiting
        counts["added"] += sum(store.save_many(fetched).values())
        fetched.clear()
        waiting = 0

    async def fetch_next(reader: HistoryReader) -> None:
        nonlocal started, waiting
        while started < len(ids) and (
                deadline is None or started < at_least or time.monotonic() < deadline):
            contact_id = ids[started]
            started += 1
            counts["contacts"] += 1
            try:
                contact_id = validate_contact_id(contact_id)
                entries = await reader.read(contact_id, since_of(known.get(contact_id)))
                fetched[contact_id] = Received.of(entries)
            except Rejected as exc:
                if exc.status != 404:
                    counts["failed"] += 1
                    log.warning("history of %s not fetched: %s", contact_id, exc)
                else:
                    counts["unknown"] += 1
            except (RemoteError, MalformedHistory, ValueError) as exc:
                counts["failed"] += 1
                log.warning("history of %s not fetched: %s", contact_id, exc)
            else:
                waiting += len(entries)
                if waiting >= WRITE_AT_ENTRIES:
                    write()

    if ids:
        async with parts.treazure.history_reader(concurrency) as reader:
            await asyncio.gather(*(fetch_next(reader) for _ in range(min(concurrency, len(ids)))))
    if fetched:
        write()
    return counts, ids[started:]


def valid_contact_id(contact_id: str) -> bool:
    try:
        validate_contact_id(contact_id)
    except ValueError:
        return False
    return True


def purge(store: Store, settings: Settings) -> int:
    """Apply HISTORY_RETENTION_DAYS: delete entries older than that (store work only: no
    Treazure, Redis or event loop needed)."""
    cutoff = datetime.now(UTC) - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    removed = HistoryStore(store).purge_before(cutoff)
    log.info("history retention: %d entries older than %s removed", removed, cutoff.date())
    return removed
