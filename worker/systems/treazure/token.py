"""Treazure's OAuth2 client-credentials token, cached in Redis for every worker process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
from redis.asyncio import Redis

# Compare-and-delete: drop the shared token only if it is still the one that failed,
# so a process does not throw away a fresh token another process just fetched.
_DROP_IF_SAME = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['access_token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# () -> (access token, seconds it is valid for)
TokenFetch = Callable[[], Awaitable[tuple[str, float]]]


class SharedToken:
    """The token every worker process uses, fetched by one of them at a time.

    Only one process fetches a new token at a time (a Redis lock); the others wait and read
    the one it stored. Tokens cannot be refreshed, so a new one is fetched `margin` seconds
    before expiry.
    """

    def __init__(
        self,
        redis: Redis,
        fetch: TokenFetch,
        *,
        namespace: str,
        margin_seconds: float,
    ) -> None:
        self._redis = redis
        self._fetch = fetch
        self._key = f"pointsync:treazure-token:{namespace}"
        self._margin = margin_seconds
        self._local: tuple[str, float] | None = None
        self._drop_script = redis.register_script(_DROP_IF_SAME)

    def _fresh(self, token: tuple[str, float] | None) -> str | None:
        if token and token[1] - self._margin > time.time():
            return token[0]
        return None

    async def _from_redis(self) -> str | None:
        raw = await self._redis.get(self._key)
        if raw is None:
            return None
        data = orjson.loads(raw)
        self._local = (data["access_token"], float(data["expires_at"]))
        return self._fresh(self._local)

    async def get(self) -> str:
        token = self._fresh(self._local) or await self._from_redis()
        if token:
            return token
        async with self._redis.lock(f"{self._key}:lock", timeout=60, blocking_timeout=60):
            token = await self._from_redis()
            if token:
                return token
            access_token, expires_in = await self._fetch()
            expires_at = time.time() + expires_in
            ttl_ms = max(1, int((expires_in - self._margin) * 1000))
            await self._redis.set(
                self._key,
                orjson.dumps({"access_token": access_token, "expires_at": expires_at}),
                px=ttl_ms,
            )
            self._local = (access_token, expires_at)
            return access_token

    async def invalidate(self, token: str) -> None:
        if self._local and self._local[0] == token:
            self._local = None
        await self._drop_script(keys=[self._key], args=[token])
