"""A request rate shared by every process through Redis (GCRA with reservations).

Each caller reserves the next free slot atomically and sleeps until it; requests are thus
spaced 1/rate apart across all workers, with no burst and no busy polling. Celery's own
`rate_limit` is per process, which is why this exists.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from redis.asyncio import Redis

# Times are microseconds from Redis's own clock, so workers with skewed clocks agree.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local next_tat = start + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1000)
return string.format('%d', start - now)
"""


# Requests are paced a little under the limit: network jitter can bunch requests that left
# exactly 1/rate apart, and a server counting a sliding second then answers 429 (which
# costs a whole Retry-After second). 2 % of throughput buys that margin.
HEADROOM = 0.98


class SlotLimiter(Protocol):
    """What a client needs of a rate limit: wait for the next request's slot."""

    async def acquire(self) -> None: ...


class SharedRateLimiter:
    def __init__(
        self, redis: Redis, key: str, rate_per_second: float, headroom: float = HEADROOM
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self._redis = redis
        self._key = key
        self._interval_us = round(1_000_000 / (rate_per_second * headroom))
        self._script = redis.register_script(_RESERVE)

    @property
    def interval_seconds(self) -> float:
        return self._interval_us / 1_000_000

    async def reserve(self) -> float:
        """Reserve the next slot; return the seconds until it starts (0 when free now)."""
        wait_us = await self._script(keys=[self._key], args=[self._interval_us])
        return int(wait_us) / 1_000_000

    async def acquire(self) -> None:
        wait = await self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
