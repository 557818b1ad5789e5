"""Thin tasks: parse arguments, call a flow, return a small JSON-serialisable summary."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.celery import app
from worker.runtime import remote
from worker.sync import run_sync


class SyncFailed(Exception):
    """The run was recorded as failed; the watermark did not move."""


@app.task(name="pointsync.sync_balances", bind=True)
def sync_balances(self: Any, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """One balance sync run; `since`/`until` (ISO times) override the window."""

    async def main() -> dict[str, Any]:
        async with remote() as r:
            summary = await run_sync(
                r.settings, r.store, r.redis, r.treazure, r.engage,
                since=since, until=until, task_id=self.request.id,
            )
        return summary.as_dict()

    result = asyncio.run(main())
    if result["status"] == "failed":
        # Shown as FAILURE in Flower and `celery result`; the run row keeps the details.
        raise SyncFailed(f"sync run {result['run_id']} failed: {result['error']}")
    return result
