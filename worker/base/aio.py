"""Small asyncio pieces the layers share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Stop a helper task (a keeper, a resender) and wait until it has stopped, so nothing it
    does can interleave with what the caller does next."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
