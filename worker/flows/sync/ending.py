"""A run's end: the outcome of its pushes through the lanes, written to its run row."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

from worker.flows.sync.lanes import Lanes
from worker.flows.sync.summary import SyncSummary
from worker.store.database import Store
from worker.store.engine import utcnow


@contextlib.asynccontextmanager
async def recorded(
    store: Store, lanes: Lanes, summary: SyncSummary, clock: float,
    on_failure: Callable[[str], None] | None = None,
) -> AsyncIterator[None]:
    """Push through `lanes` in the block; then write the run's outcome to its row.

    The run `succeeded` once the block ends and the lanes' rows are written. An error
    fails it, with the reason in `summary` (not raised: the caller returns it, after
    `on_failure` was told); a cancel fails it too, and goes on. Either way what Engage
    accepted is recorded, so the next run does not send it again.
    """
    try:
        yield
        await lanes.finish()
        summary.status = "succeeded"
    except asyncio.CancelledError as exc:
        summary.status, summary.error = "failed", cancel_reason(exc)
        with contextlib.suppress(Exception):
            await lanes.finish()
        raise
    except Exception as exc:
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        if on_failure is not None:
            on_failure(summary.error)
        with contextlib.suppress(Exception):
            await lanes.finish()
    finally:
        _record_end(store, lanes, summary, clock)


def _record_end(store: Store, lanes: Lanes, summary: SyncSummary, clock: float) -> None:
    """Stop the run's threads and write its outcome, counts and duration to its row."""
    lanes.stop_threads()
    summary.counts = lanes.counts
    summary.duration_seconds = round(time.monotonic() - clock, 3)
    store.update_run(
        lanes.run_id, status=summary.status, finished_at=utcnow(),
        duration_seconds=summary.duration_seconds, error=summary.error,
        **asdict(lanes.counts),
    )



def cancel_reason(exc: asyncio.CancelledError) -> str:
    """Why a run was cancelled: the lock keeper says so in the cancel's message."""
    return f"cancelled: {exc.args[0]}"[:2000] if exc.args else "cancelled"
