"""Toggle's credit bucket in Redis: reservations queue across processes, the server's
figure caps it, credits of unsent requests come back."""

from __future__ import annotations

import fakeredis
import pytest

from worker.systems.toggle.throttle import REFILL_PER_SECOND, CreditBucket

KEY = "pointsync:toggle:credits:test"


class Clock:
    def __init__(self) -> None:
        self.us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.us

    def advance(self, seconds: float) -> None:
        self.us += round(seconds * 1_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_full_bucket_lets_requests_go_at_once(redis, clock) -> None:
    bucket = CreditBucket(redis, KEY, clock_us=clock)

    assert await bucket.take(20) == 0
    assert await bucket.available() == pytest.approx(7980)


async def test_a_burst_from_two_processes_queues_for_credits(redis_server, clock) -> None:
    first = CreditBucket(fakeredis.FakeAsyncRedis(server=redis_server), KEY, clock_us=clock)
    second = CreditBucket(fakeredis.FakeAsyncRedis(server=redis_server), KEY, clock_us=clock)
    await first.reconcile(30)

    waits = [await first.take(20), await second.take(20), await first.take(20)]

    # 30 credits: the first goes, the second waits for 10 more, the third for 30 more.
    assert waits == pytest.approx([0, 10 / REFILL_PER_SECOND, 30 / REFILL_PER_SECOND])


async def test_credits_refill_at_the_rate_up_to_the_maximum(redis, clock) -> None:
    bucket = CreditBucket(redis, KEY, maximum=100, clock_us=clock)
    await bucket.reconcile(0)

    clock.advance(6)
    assert await bucket.available() == pytest.approx(6 * REFILL_PER_SECOND)
    clock.advance(3600)
    assert await bucket.available() == pytest.approx(100)


async def test_the_server_figure_lowers_the_bucket_but_never_raises_it(redis, clock) -> None:
    bucket = CreditBucket(redis, KEY, clock_us=clock)
    await bucket.take(1000)  # 7000 left here

    assert await bucket.reconcile(6500) == pytest.approx(6500)
    assert await bucket.reconcile(7900) == pytest.approx(6500)


async def test_credits_of_a_request_that_never_left_come_back(redis, clock) -> None:
    bucket = CreditBucket(redis, KEY, clock_us=clock)
    await bucket.reconcile(100)
    await bucket.take(20)

    assert await bucket.give_back(20) == pytest.approx(100)


async def test_without_a_test_clock_redis_time_is_used(redis) -> None:
    bucket = CreditBucket(redis, KEY)
    await bucket.reconcile(0)

    wait = await bucket.take(10)

    # Redis's clock moves on a little between the two calls: the wait can only shrink.
    assert 0 < wait <= 10 / REFILL_PER_SECOND
