"""The shared rate limit: reservations spaced 1/rate apart, across processes, by Redis."""

from __future__ import annotations

import asyncio
import itertools

import fakeredis
import pytest

from tests.support.unit import SleepRecorder
from worker.base.ratelimit import SharedRateLimiter

# The waits come from Redis's clock, which moves on a little between two calls; the
# tolerance absorbs that, and is small next to the one-second interval being checked.
SLACK = 0.25


@pytest.mark.parametrize("rate", [1.0, 2.0])
async def test_consecutive_reservations_are_spaced_one_interval_apart(redis, rate) -> None:
    limiter = SharedRateLimiter(redis, "rl:engage", rate, headroom=1.0)
    interval = 1 / rate

    waits = [await limiter.reserve() for _ in range(4)]

    assert waits[0] == 0.0
    for n, wait in enumerate(waits):
        assert n * interval - SLACK < wait <= n * interval
    steps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(interval - SLACK < step <= interval for step in steps)


async def test_two_limiters_on_one_key_share_the_pacing(redis_server) -> None:
    # Two clients of one Redis server stand for two worker processes.
    first_process = fakeredis.FakeAsyncRedis(server=redis_server)
    second_process = fakeredis.FakeAsyncRedis(server=redis_server)
    a = SharedRateLimiter(first_process, "rl:engage", 1.0, headroom=1.0)
    b = SharedRateLimiter(second_process, "rl:engage", 1.0, headroom=1.0)

    waits = [await a.reserve(), await b.reserve(), await a.reserve(), await b.reserve()]

    assert waits[0] == 0.0
    for n, wait in enumerate(waits):
        assert n - SLACK < wait <= n


async def test_a_different_key_is_paced_separately(redis) -> None:
    engage = SharedRateLimiter(redis, "rl:key-a", 1.0, headroom=1.0)
    other = SharedRateLimiter(redis, "rl:key-b", 1.0, headroom=1.0)

    await engage.reserve()
    await engage.reserve()

    assert await other.reserve() == 0.0


async def test_concurrent_reservations_each_get_their_own_slot(redis) -> None:
    limiter = SharedRateLimiter(redis, "rl:engage", 1.0, headroom=1.0)

    waits = sorted(await asyncio.gather(*(limiter.reserve() for _ in range(8))))

    assert waits[0] == 0.0
    for n, wait in enumerate(waits):
        assert n - SLACK < wait <= n


async def test_reservation_state_expires_once_idle(redis) -> None:
    limiter = SharedRateLimiter(redis, "rl:engage", 1.0, headroom=1.0)

    for _ in range(3):
        await limiter.reserve()

    ttl_ms = await redis.pttl("rl:engage")
    # The last slot is ~3 s ahead; the key outlives it by about a second, not forever.
    assert 3000 < ttl_ms <= 4100


async def test_acquire_sleeps_until_its_slot(redis, sleeps: SleepRecorder) -> None:
    limiter = SharedRateLimiter(redis, "rl:engage", 1.0, headroom=1.0)

    await limiter.acquire()
    assert sleeps.delays == []  # the first slot is free now: no pause at all

    await limiter.acquire()
    assert len(sleeps.delays) == 1
    assert 1 - SLACK < sleeps.delays[0] <= 1


@pytest.mark.parametrize("rate", [0, -5])
def test_rate_must_be_positive(redis, rate) -> None:
    with pytest.raises(ValueError):
        SharedRateLimiter(redis, "rl:engage", rate, headroom=1.0)


def test_default_pacing_keeps_headroom_under_the_limit(redis) -> None:  # type: ignore[no-untyped-def]
    """At 50/s the slots are 1/(50·0.98) s apart, so jitter cannot bunch 51 into a second."""
    assert SharedRateLimiter(redis, "rl:headroom", 50).interval_seconds == pytest.approx(
        1 / 49, abs=1e-6)
    assert SharedRateLimiter(redis, "rl:exact", 50, headroom=1.0).interval_seconds == 0.02
