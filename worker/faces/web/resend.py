"""The resender: once Redis answers again after a failed enqueue, queue the rows this
process recorded but could not queue: within seconds of Redis's return, not at the sweep's
POINTS_STALE_SECONDS (the sweep stays the last resort)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web

from worker.base.aio import cancel_and_wait
from worker.faces.web.context import LEDGER, SETTINGS, blocking, short_error
from worker.faces.web.health import check_redis
from worker.faces.web.queueing import ENQUEUE, SOURCE, UNSENT
from worker.flows.points.record import booking_arguments

log = logging.getLogger("pointsync.web")

# After a failed enqueue, Redis is asked this often whether it is back; then the rows
# recorded meanwhile are queued, this many per database read.
RESEND_POLL_SECONDS = 1.0
RESEND_PAGE = 500


async def resend_unsent(app: web.Application) -> None:
    unsent = app[UNSENT]
    while True:
        await unsent.noticed.wait()
        if await check_redis(app) != "ok":
            await asyncio.sleep(RESEND_POLL_SECONDS)
            continue
        since = unsent.take()
        if since is None:
            continue
        queued, error = await blocking(app, _queue_recorded, app, since)
        if error is not None:  # Redis went away again: this round is taken up later
            unsent.note(since)
            log.warning("queueing recorded webhook rows stopped after %d (%s)", queued, error)
            await asyncio.sleep(RESEND_POLL_SECONDS)
        elif queued:
            log.info("Redis answers again: queued %d webhook row(s) recorded meanwhile", queued)


def _queue_recorded(app: web.Application, since: datetime) -> tuple[int, str | None]:
    """Queue every webhook row recorded since `since` and never taken up, page by page;
    (how many were queued, the error that stopped it or None)."""
    ledger, queued, after = app[LEDGER], 0, ""
    while rows := ledger.never_sent(SOURCE, since, after, RESEND_PAGE):
        for row in rows:
            try:
                app[ENQUEUE](booking_arguments(row))
            except Exception as exc:
                return queued, short_error(exc, app[SETTINGS])
            queued += 1
        after = rows[-1].reference
    return queued, None


async def resender(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the resender runs for the app's lifetime."""
    task = asyncio.ensure_future(resend_unsent(app))
    yield
    await cancel_and_wait(task)
