"""Small asyncio pieces the layers share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# A cancel that a library swallowed (redis-py sends through asyncio.wait_for, which on
# Python 3.11 can lose a cancellation) is asked again this often, so a stop never hangs.
CANCEL_AGAIN_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Stop a helper task (a keeper, a resender) and wait until it has stopped, so nothing it
    does can interleave with what the caller does next."""
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_SECONDS)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
