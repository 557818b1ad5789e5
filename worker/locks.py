"""A Redis lock that its holder keeps alive, and that expires soon after the holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import LockError

log = logging.getLogger("pointsync.locks")


class LockLost(Exception):
    """The lock expired or was taken while we held it; the guarded work must stop."""


@contextlib.asynccontextmanager
async def held_lock(redis: Redis, name: str, ttl_seconds: int) -> AsyncIterator[bool]:
    """Try once to take `name`; yields False when someone else holds it.

    While held, the lock is extended every ttl/3 seconds. If an extension fails, the body
    is cancelled and LockLost raised, so two holders never run at once for long.
    """
    lock = redis.lock(name, timeout=ttl_seconds, blocking=False, thread_local=False)
    if not await lock.acquire():
        yield False
        return
    body = asyncio.current_task()
    lost = asyncio.Event()

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(ttl_seconds / 3)
            try:
                await lock.reacquire()
            except LockError:
                log.error("lock %s was lost; stopping the work it guarded", name)
                lost.set()
                if body is not None:
                    body.cancel()
                return

    keeper = asyncio.create_task(keep_alive())
    try:
        yield True
    except asyncio.CancelledError:
        if lost.is_set():
            if body is not None:
                body.uncancel()  # the cancel was ours; callers may go on after LockLost
            raise LockLost(f"lock {name} expired while held") from None
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(LockError):
            await lock.release()
