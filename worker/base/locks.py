"""A Redis lock that its holder keeps alive, and that expires soon after the holder dies.

The holder extends the lock every ttl/3. When an extension fails because Redis cannot be
reached, it keeps trying with short pauses, but only while the lock is surely still its
own: until the TTL counted from the last extension Redis confirmed, less a safety margin.
Then it gives up, cancels the guarded work and raises LockLost, so the work has stopped
before the lock can expire and a second holder start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from worker.base.aio import cancel_and_wait
from worker.base.backoff import doubled

log = logging.getLogger("pointsync.locks")

# The keeper gives up with this share of the TTL still left: the cancelled work has that
# long to stop before the lock expires and someone else may take it.
SAFETY_SHARE = 0.2
# Pauses between extension attempts while Redis is unreachable (grow, then stay).
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 1.0


class LockLost(Exception):
    """The lock expired or was taken while we held it; the guarded work must stop."""


@dataclass
class _Holding:
    inside: bool = True  # the guarded block has not ended yet
    lost: str | None = None  # why the lock was given up, once it was


@contextlib.asynccontextmanager
async def held_lock(
    redis: Redis, name: str, ttl_seconds: int, *, wait_seconds: float = 0.0
) -> AsyncIterator[bool]:
    """Take `name` (waiting up to `wait_seconds` for it); yields False when someone else
    still holds it.

    While held, the lock is extended every ttl/3 seconds. If it is lost (taken or expired,
    or Redis unreachable until the TTL is nearly spent), the body is cancelled and
    LockLost raised, so two holders never run at once.
    """
    lock = redis.lock(name, timeout=ttl_seconds, blocking=wait_seconds > 0,
                      blocking_timeout=wait_seconds or None, thread_local=False)
    asked_at = time.monotonic()
    if not await lock.acquire():
        yield False
        return
    body = asyncio.current_task()
    holding = _Holding()
    keeper = asyncio.create_task(_keep_alive(lock, name, ttl_seconds, asked_at, holding, body))
    try:
        yield True
    except asyncio.CancelledError:
        if holding.lost is None:
            raise
    finally:
        holding.inside = False
        await cancel_and_wait(keeper)
        await _release(lock, name)
    if holding.lost is not None:
        if body is not None:
            body.uncancel()  # the cancel was ours; callers may go on after LockLost
        raise LockLost(f"lock {name} lost while held: {holding.lost}")


async def _keep_alive(
    lock: Lock, name: str, ttl: float, confirmed_at: float, holding: _Holding,
    body: asyncio.Task[object] | None,
) -> None:
    """Extend the lock until cancelled; on loss, cancel the body (if still inside)."""
    while True:
        await asyncio.sleep(ttl / 3)
        # `confirmed_at` is when the last successful command was sent: Redis set the
        # expiry after that, so the lock is ours at least until confirmed_at + ttl.
        deadline = confirmed_at + ttl * (1 - SAFETY_SHARE)
        extended_at, why = await _extend_before(lock, name, deadline)
        if extended_at is None:
            if holding.inside:
                holding.lost = why
                log.error("lock %s was lost (%s); stopping the work it guarded", name, why)
                if body is not None:
                    body.cancel(f"lock {name} lost: {why}")
            return
        confirmed_at = extended_at


async def _extend_before(lock: Lock, name: str, deadline: float) -> tuple[float | None, str]:
    """Extend the lock, retrying while Redis is unreachable until `deadline`.

    Returns when the successful attempt was sent, or None and why it could not be.
    """
    failures = 0
    error = "no attempt before the deadline"
    while (remaining := deadline - time.monotonic()) > 0:
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                await lock.reacquire()
            return sent_at, ""
        except LockError:
            return None, "it expired or another holder took it"
        except (RedisError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("lock %s: extension failed (%s); trying again", name, error)
        pause = doubled(RETRY_FIRST_SECONDS, failures, RETRY_MAX_SECONDS)
        failures += 1
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    return None, f"Redis unreachable until the TTL was nearly spent ({error})"


async def _release(lock: Lock, name: str) -> None:
    try:
        await lock.release()
    except LockError:
        pass  # expired or taken meanwhile: not ours to delete
    except (RedisError, OSError) as exc:
        # Unreachable: the lock expires on its own within the TTL.
        log.warning("lock %s: release failed (%s); it expires with its TTL", name, exc)
