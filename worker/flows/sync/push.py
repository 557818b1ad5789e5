"""Given balances pushed through a sync run's lanes (the heal after a reconcile)."""

from __future__ import annotations

import asyncio
import time

from worker.base.settings import Settings
from worker.flows.sync.ending import recorded
from worker.flows.sync.lanes import Lanes
from worker.flows.sync.summary import SyncSummary
from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.pushguard import PushGuard
from worker.systems.engage.client import EngageClient
from worker.systems.treazure.parsing import BalanceEntry


async def push_entries(
    settings: Settings,
    store: Store,
    engage: EngageClient,
    guard: PushGuard,
    entries: list[BalanceEntry],
    *,
    kind: str = "heal",
    summary: SyncSummary | None = None,
) -> SyncSummary:
    """Push given balances through a sync run's lanes: the same claims, guard, batches,
    rate limit and bookkeeping as a sync, recorded as a run of its own `kind`.

    Every entry is pushed unless Engage was sent a newer balance meanwhile (it is then
    counted stale), even one equal to what Engage was last sent: the caller found Engage
    holding something else. Call it under the run lock (`under_run_lock`, which passes
    the `summary` to fill in), so no sync pushes the same contacts meanwhile.
    """
    started_at = utcnow()
    run_id = store.start_run(started_at=started_at, window_from=None, window_to=None,
                             explicit_window=True, task_id=None, kind=kind)
    clock = time.monotonic()
    lanes = Lanes(store, engage, guard, run_id, settings)
    lanes.force = True
    summary = summary or SyncSummary("running", None)
    summary.run_id = run_id
    async with recorded(store, lanes, summary, clock):
        lanes.counts.fetched = len(entries)
        tasks = [asyncio.create_task(lanes.run_lane(i)) for i in range(lanes.count)]
        try:
            await lanes.add(entries)
            await lanes.end_of_input()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return summary
