"""The run lock: taken once or not at all, kept alive while held, lost loudly."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from worker.locks import LockLost, held_lock

# Upper bound for waits that must be interrupted long before it (a failing test ends here
# instead of hanging).
NEVER = 10


async def test_second_holder_is_refused_while_the_first_holds(redis_server) -> None:
    first_process = fakeredis.FakeAsyncRedis(server=redis_server)
    second_process = fakeredis.FakeAsyncRedis(server=redis_server)

    async with held_lock(first_process, "pointsync:run", 30) as first:
        async with held_lock(second_process, "pointsync:run", 30) as second:
            assert first is True
            assert second is False
        # The refused one must not have released the holder's lock on its way out.
        assert await first_process.exists("pointsync:run") == 1


async def test_lock_is_released_after_the_block(redis) -> None:
    async with held_lock(redis, "pointsync:run", 30) as held:
        assert held is True
        assert await redis.exists("pointsync:run") == 1

    assert await redis.exists("pointsync:run") == 0
    async with held_lock(redis, "pointsync:run", 30) as again:
        assert again is True


async def test_lock_is_released_when_the_block_fails(redis) -> None:
    with pytest.raises(RuntimeError):
        async with held_lock(redis, "pointsync:run", 30):
            raise RuntimeError("boom")

    assert await redis.exists("pointsync:run") == 0


async def test_lock_has_a_ttl_so_a_dead_holder_frees_it(redis) -> None:
    async with held_lock(redis, "pointsync:run", 30):
        ttl_ms = await redis.pttl("pointsync:run")

    assert 0 < ttl_ms <= 30_000


async def test_lock_is_kept_alive_beyond_its_ttl(redis_server) -> None:
    holder = fakeredis.FakeAsyncRedis(server=redis_server)
    other = fakeredis.FakeAsyncRedis(server=redis_server)

    async with held_lock(holder, "pointsync:run", 1) as held:
        assert held
        # Work that outlasts the one-second ttl: the keeper must have extended it.
        await asyncio.sleep(1.5)
        assert await holder.exists("pointsync:run") == 1
        async with held_lock(other, "pointsync:run", 1) as stolen:
            assert stolen is False


async def test_lock_lost_while_held_stops_the_work(redis) -> None:
    never_set = asyncio.Event()

    with pytest.raises(LockLost, match="pointsync:run"):
        async with held_lock(redis, "pointsync:run", 1):
            await redis.delete("pointsync:run")  # expired, as after a long pause
            await asyncio.wait_for(never_set.wait(), timeout=NEVER)


async def test_lock_taken_by_another_process_stops_the_work(redis_server) -> None:
    holder = fakeredis.FakeAsyncRedis(server=redis_server)
    other = fakeredis.FakeAsyncRedis(server=redis_server)
    never_set = asyncio.Event()

    with pytest.raises(LockLost):
        async with held_lock(holder, "pointsync:run", 1):
            # Our lock expired and another process took it with its own token.
            await other.set("pointsync:run", "other-process-token", ex=30)
            await asyncio.wait_for(never_set.wait(), timeout=NEVER)

    # The one who lost it must not delete the new holder's lock on its way out.
    assert await other.get("pointsync:run") == b"other-process-token"


async def test_an_ordinary_cancel_is_not_reported_as_lock_lost(redis) -> None:
    entered = asyncio.Event()

    async def guarded() -> None:
        async with held_lock(redis, "pointsync:run", 30):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(guarded())
    await entered.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.exists("pointsync:run") == 0
