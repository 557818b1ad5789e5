"""The run lock: taken once or not at all, kept alive while held, lost loudly."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis.exceptions

from tests.support.aio import eventually
from worker.base.locks import LockLost, held_lock

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


class ExtensionCalls:
    """Counts the lock scripts a client sends (extensions and the release), as they end."""

    def __init__(self, client: fakeredis.FakeAsyncRedis) -> None:
        self.failed = 0
        self.succeeded = 0
        send = client.evalsha

        async def counted(*args: object) -> object:
            try:
                result = await send(*args)
            except redis.exceptions.ConnectionError:
                self.failed += 1
                raise
            self.succeeded += 1
            return result

        client.evalsha = counted  # type: ignore[method-assign]


async def test_keeper_rides_out_a_short_redis_outage(redis_server) -> None:
    holder = fakeredis.FakeAsyncRedis(server=redis_server)
    other = fakeredis.FakeAsyncRedis(server=redis_server)
    calls = ExtensionCalls(holder)

    async with held_lock(holder, "pointsync:run", 2) as held:
        assert held
        redis_server.connected = False  # Redis unreachable: every extension fails
        await eventually(lambda: calls.failed >= 2, NEVER, "two failed extensions")
        redis_server.connected = True
        # Extended again after the outage, and kept alive past its two-second ttl.
        await eventually(lambda: calls.succeeded >= 4, NEVER, "four extensions")
        assert await other.exists("pointsync:run") == 1
        async with held_lock(other, "pointsync:run", 2) as stolen:
            assert stolen is False
    assert await other.exists("pointsync:run") == 0  # released at the end as usual


async def test_redis_gone_past_the_ttl_stops_the_work_before_the_lock_expires(
    redis_server,
) -> None:
    holder = fakeredis.FakeAsyncRedis(server=redis_server)
    other = fakeredis.FakeAsyncRedis(server=redis_server)
    calls = ExtensionCalls(holder)
    left_when_stopped: list[int] = []

    with pytest.raises(LockLost, match="pointsync:run"):
        async with held_lock(holder, "pointsync:run", 2):
            redis_server.connected = False
            try:
                await asyncio.wait_for(asyncio.Event().wait(), timeout=NEVER)
            except asyncio.CancelledError:
                # Stopped while the key still stood: no second holder could have started.
                redis_server.connected = True
                left_when_stopped.append(await other.pttl("pointsync:run"))
                redis_server.connected = False
                raise
    redis_server.connected = True
    assert calls.failed >= 2  # it kept trying before it gave up
    assert left_when_stopped and left_when_stopped[0] > 0
