"""One sync run: take the run lock, work out the window, stream the Balances/Get job's
pages, and push what changed to Engage through the lanes while the next pages are fetched.

Balances Engage refused with ContactNotFound are pushed again by each sync run for
ENGAGE_NOT_FOUND_RETRY_SECONDS after their first refusal, unless a balance as new was
sent since: a contact created in Engage a little later then comes into step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from worker.base.arguments import InvalidArgument
from worker.base.logs import bind_log_context
from worker.base.money import exact_amount, utc_micros
from worker.base.settings import Settings
from worker.flows.sync.ending import recorded
from worker.flows.sync.lanes import Lanes
from worker.flows.sync.locking import under_run_lock, wait_for_lock_release
from worker.flows.sync.screen import UnchangedScreen
from worker.flows.sync.summary import Counts, SyncSummary
from worker.flows.sync.window import Window, compute_window, parse_time_argument
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.client import TreazureClient
from worker.systems.treazure.parsing import BalanceEntry, MalformedEntry

log = logging.getLogger("pointsync.sync")

PROGRESS_EVERY_SECONDS = 2.0
# Engage's reason for a contact it does not know (yet): such rows are pushed again later.
NOT_FOUND = "ContactNotFound"
RETRY_READ_CHUNK = 1000


async def run_sync(
    settings: Settings,
    store: Store,
    redis: Any,
    treazure: TreazureClient,
    engage: EngageClient,
    *,
    since: str | None = None,
    until: str | None = None,
    task_id: str | None = None,
    guard: PushGuard | None = None,
    kind: str = "sync",
    progress: Callable[[Counts], None] | None = None,
) -> SyncSummary:
    """One sync run; returns its summary. Raises only for invalid arguments.

    `kind="migrate"` is the go-live copy: an explicit window that still moves the
    watermark, so the hourly sync starts where the copy began. `progress` is called with
    the counts after every page read.
    """
    guard = guard or PushGuard.for_settings(redis, settings)
    since_at = parse_time_argument("since", since)
    until_at = parse_time_argument("until", until)
    if since_at and until_at and since_at >= until_at:
        raise InvalidArgument("since: must be before until")

    if task_id is not None and store.has_running_run(task_id):
        # This very task was running when its worker died, and the broker handed it out
        # again: the dead holder's lock is about to expire, so wait for it, not skip.
        await wait_for_lock_release(redis, settings.SYNC_LOCK_TTL_SECONDS + 5)
    async def locked(summary: SyncSummary) -> None:
        await guard.prune()
        await _locked_run(settings, store, treazure, engage, guard, since_at, until_at,
                          task_id, summary, kind, progress)

    return await under_run_lock(
        settings, store, redis, locked, kind=kind, task_id=task_id,
        window=(since_at, until_at), explicit_window=since is not None or until is not None)



async def _locked_run(
    settings: Settings,
    store: Store,
    treazure: TreazureClient,
    engage: EngageClient,
    guard: PushGuard,
    since: datetime | None,
    until: datetime | None,
    task_id: str | None,
    summary: SyncSummary,
    kind: str = "sync",
    progress: Callable[[Counts], None] | None = None,
) -> None:
    """One run under the lock; fills in `summary` (its status last)."""
    abandoned = store.abandon_running_runs()
    if abandoned:
        log.warning("marked %d run(s) left running by a stopped worker as abandoned", abandoned)
    started_at = utcnow()
    window = compute_window(settings, started_at, store.watermark(), since, until)
    run_id = store.start_run(
        started_at=started_at, window_from=window.start, window_to=window.end,
        explicit_window=window.explicit and kind != "migrate", task_id=task_id, kind=kind,
    )
    bind_log_context(run_id=run_id)
    log.info("sync run %s started: window %s → %s", run_id, window.start, window.end)
    clock = time.monotonic()
    lanes = Lanes(store, engage, guard, run_id, settings)
    summary.run_id = run_id
    summary.window_from, summary.window_to = window.start.isoformat(), window.end.isoformat()
    async with recorded(store, lanes, summary, clock, on_failure=lambda error: log.error(
            "sync run %s failed: %s", run_id, error)):
        retries = refused_to_retry(store, settings) if kind == "sync" else []
        await _stream(treazure, lanes, window, store, run_id, progress, retries)
    log.info("sync run %s %s: %s", run_id, summary.status, asdict(summary.counts))


def refused_to_retry(store: Store, settings: Settings) -> list[BalanceEntry]:
    """Balances Engage refused with ContactNotFound within the retry period and not sent
    since (no balance as new was accepted for the contact): a sync pushes them again."""
    period = timedelta(seconds=settings.ENGAGE_NOT_FOUND_RETRY_SECONDS)
    if not period:
        return []
    newest: dict[str, BalanceEntry] = {}
    for contact_id, cents, mutated_at in store.refusals_to_retry(NOT_FOUND, period, utcnow()):
        at = datetime.fromisoformat(mutated_at)
        entry = BalanceEntry(contact_id, cents, utc_micros(at), at, exact_amount(cents))
        held = newest.get(contact_id)
        if held is None or held.mutated_us < entry.mutated_us:
            newest[contact_id] = entry
    ids = list(newest)
    for start in range(0, len(ids), RETRY_READ_CHUNK):
        states = store.contact_states(ids[start:start + RETRY_READ_CHUNK])
        for contact_id, state in states.items():
            if state.sent_mutated_us is not None and \
                    state.sent_mutated_us >= newest[contact_id].mutated_us:
                del newest[contact_id]
    if newest:
        log.info("pushing again %d balance(s) Engage refused with %s", len(newest), NOT_FOUND)
    return list(newest.values())


async def _stream(
    treazure: TreazureClient, lanes: Lanes, window: Window, store: Store, run_id: int,
    progress: Callable[[Counts], None] | None = None,
    retries: list[BalanceEntry] | None = None,
) -> None:
    """Read pages and push batches concurrently; the first failure stops both sides.

    `retries` go into the lanes first: a newer balance read from the window then wins.
    """

    async def produce() -> None:
        if retries:
            await lanes.add(retries)
        screen = UnchangedScreen(lanes)
        # A page is screened on a reader thread while the next one is fetched and parsed;
        # pages reach the lanes in the order they were read.
        screening: asyncio.Task[list[BalanceEntry]] | None = None
        last_progress = time.monotonic()
        try:
            async for entries, malformed in treazure.balance_pages(window.start, window.end):
                lanes.counts.fetched += len(entries) + len(malformed)
                if malformed:
                    _record_malformed(run_id, lanes, malformed)
                if screening is not None:
                    await lanes.add(await screening)
                    screening = None
                if screen.wants(entries):
                    screening = asyncio.create_task(screen.survivors(entries))
                else:
                    await lanes.add(entries)
                if progress is not None:
                    progress(lanes.counts)
                if time.monotonic() - last_progress > PROGRESS_EVERY_SECONDS:
                    lanes.record_progress()
                    last_progress = time.monotonic()
            if screening is not None:
                await lanes.add(await screening)
                screening = None
        finally:
            if screening is not None:
                screening.cancel()
        await lanes.end_of_input()

    tasks = [asyncio.create_task(produce())]
    tasks += [asyncio.create_task(lanes.run_lane(i)) for i in range(lanes.count)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _record_malformed(run_id: int, lanes: Lanes, malformed: list[MalformedEntry]) -> None:
    lanes.counts.rejected += len(malformed)
    lanes.rejections.extend((run_id, m.contact_id, None, None, m.reason) for m in malformed)

