"""Toggle's cost-based throttle, shared by every process through Redis.

One bucket of credits per API user, as Toggle keeps it: at most 8,000, refilled at 5,000
per 10 minutes. A request takes its estimated cost first; when the bucket cannot cover it,
the credits are still reserved (the bucket goes below zero) and the caller sleeps until the
refill has paid them back. Callers thus queue in order across processes with no polling,
and a burst waits for credits instead of meeting `Throttled`. After each answer the bucket
is brought down to what Toggle says is left (never above it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

MAXIMUM_CREDITS = 8000
REFILL_PER_SECOND = 5000 / 600

# Times in microseconds, from Redis's clock unless the caller gives one (ARGV[4] > 0), so
# processes with skewed clocks agree. Credits are floats, returned as text (Redis would
# truncate a Lua number).
_PRELUDE = """
local now = tonumber(ARGV[4])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local max = tonumber(ARGV[2])
local rate = tonumber(ARGV[3]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'credits', 'at')
local credits = tonumber(state[1])
local at = tonumber(state[2])
if credits == nil or at == nil then
  credits = max
  at = now
end
credits = math.min(max, credits + math.max(0, now - at) * rate)
"""

_SAVE = """
redis.call('HSET', KEYS[1], 'credits', string.format('%.6f', credits),
           'at', string.format('%d', now))
-- Once the bucket would be full again the state says nothing: let it go.
redis.call('PEXPIRE', KEYS[1], math.ceil((max - credits) / rate / 1000) + 60000)
"""

# ARGV[1] = cost. Returns the seconds to wait before sending.
_TAKE = _PRELUDE + """
credits = credits - tonumber(ARGV[1])
""" + _SAVE + """
if credits >= 0 then return '0' end
return string.format('%.6f', -credits / rate / 1000000)
"""

# ARGV[1] = credits Toggle says are left (or -1: none said), ARGV[5] = credits to give
# back (a request that never left). Returns the credits now in the bucket.
_SETTLE = _PRELUDE + """
credits = math.min(max, credits + tonumber(ARGV[5]))
local server = tonumber(ARGV[1])
if server >= 0 then
  credits = math.min(credits, server)
  redis.call('HSET', KEYS[1], 'server', string.format('%.6f', server),
             'server_at', string.format('%d', now))
end
""" + _SAVE + """
return string.format('%.6f', credits)
"""


class CreditBucket:
    def __init__(
        self,
        redis: Redis,
        key: str,
        *,
        maximum: float = MAXIMUM_CREDITS,
        refill_per_second: float = REFILL_PER_SECOND,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self._redis = redis
        self.key = key
        self.maximum = maximum
        self.refill_per_second = refill_per_second
        self._clock_us = clock_us  # tests only: Redis's clock otherwise
        self._take = redis.register_script(_TAKE)
        self._settle = redis.register_script(_SETTLE)

    def _args(self, first: float, give_back: float = 0) -> list[str]:
        now = self._clock_us() if self._clock_us else 0
        return [str(first), str(self.maximum), str(self.refill_per_second), str(now),
                str(give_back)]

    async def take(self, cost: float) -> float:
        """Reserve `cost` credits; the seconds to wait until they are paid for."""
        return float(await self._take(keys=[self.key], args=self._args(cost)))

    async def acquire(self, cost: float) -> float:
        """Reserve `cost` credits and sleep until they are there; the seconds slept."""
        wait = await self.take(cost)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    async def reconcile(self, currently_available: float) -> float:
        """Never more credits than Toggle says are left; the credits now in the bucket."""
        return float(await self._settle(keys=[self.key],
                                        args=self._args(max(0.0, currently_available))))

    async def give_back(self, cost: float) -> float:
        """Return the credits of a request that never reached Toggle."""
        return float(await self._settle(keys=[self.key], args=self._args(-1, cost)))

    async def available(self) -> float:
        """Credits in the bucket now (negative while callers wait for reserved ones)."""
        return float(await self._settle(keys=[self.key], args=self._args(-1)))

    def seconds_for(self, credits: float) -> float:
        return max(0.0, credits) / self.refill_per_second
