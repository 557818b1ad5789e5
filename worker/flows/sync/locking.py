"""The run lock: one sync, migration or heal at a time; a run without it is recorded skipped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from worker.base.locks import LockLost, held_lock
from worker.base.settings import Settings
from worker.flows.sync.summary import SyncSummary
from worker.store.database import Store
from worker.store.engine import utcnow

log = logging.getLogger("pointsync.sync")

RUN_LOCK = "pointsync:lock:sync_balances"


async def under_run_lock(
    settings: Settings,
    store: Store,
    redis: Any,
    work: Callable[[SyncSummary], Awaitable[None]],
    *,
    kind: str,
    task_id: str | None = None,
    wait_seconds: float = 0.0,
    window: tuple[datetime | None, datetime | None] = (None, None),
    explicit_window: bool = True,
) -> SyncSummary:
    """Do `work` holding the run lock: one sync, migration or heal at a time.

    `work` fills in the summary it is given as it goes. Without the lock (still held by
    another run after `wait_seconds`) a `skipped` run is recorded instead. A run whose lock
    was lost is cancelled and ends `failed`, never `succeeded`.
    """
    summary = SyncSummary("running", None)
    try:
        async with held_lock(redis, RUN_LOCK, settings.SYNC_LOCK_TTL_SECONDS,
                             wait_seconds=wait_seconds) as acquired:
            if not acquired:
                return _record_skipped(store, kind, task_id, window, explicit_window)
            await work(summary)
    except LockLost as exc:
        summary.status, summary.error = "failed", f"LockLost: {exc}"[:2000]
        if summary.run_id is not None:
            store.update_run(summary.run_id, status="failed", error=summary.error)
        log.error("%s run %s stopped: %s", kind, summary.run_id, exc)
    return summary


def _record_skipped(
    store: Store, kind: str, task_id: str | None,
    window: tuple[datetime | None, datetime | None], explicit_window: bool,
) -> SyncSummary:
    now = utcnow()
    run_id = store.start_run(
        started_at=now, window_from=window[0], window_to=window[1],
        explicit_window=explicit_window, task_id=task_id, status="skipped", kind=kind,
    )
    store.update_run(run_id, finished_at=now, duration_seconds=0.0,
                     error="another run holds the run lock")
    log.info("%s skipped: another run is in progress (run %s)", kind, run_id)
    return SyncSummary("skipped", run_id, error="another sync run is in progress")


async def wait_for_lock_release(redis: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await redis.exists(RUN_LOCK) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
