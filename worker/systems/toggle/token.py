"""One Toggle token for every worker process, kept in Redis.

Toggle hands the token out in the `X-Authorization` header of loginUser's answer and may
hand a newer one on any answer (sliding refresh): whichever process sees a new one stores
it, and every process uses the stored one from its next request on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

# A token lives 60 minutes from its issue; kept a little less, so a stored token is never
# one Toggle has already let go (a later `Unauthorized` is handled anyway).
TOKEN_TTL_SECONDS = 55 * 60

# Compare-and-delete: drop the shared token only if it is still the one that failed, so
# a process does not throw away the fresh token another process just stored.
_DROP_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# () -> a new token (loginUser)
Login = Callable[[], Awaitable[str]]


def bearer_from(header: str | None) -> str | None:
    """The token of an `X-Authorization: Bearer <jwt>` header (or a bare token)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header.strip()
    return token or None


class SharedToken:
    def __init__(self, redis: Redis, login: Login, *, namespace: str) -> None:
        self._redis = redis
        self._login = login
        self.key = f"pointsync:toggle:token:{namespace}"
        self._drop_script = redis.register_script(_DROP_IF_SAME)

    async def current(self) -> str | None:
        raw = await self._redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def get(self) -> str:
        """The shared token; logs in (one process at a time) when there is none."""
        token = await self.current()
        if token:
            return token
        async with self._redis.lock(f"{self.key}:lock", timeout=60, blocking_timeout=60):
            token = await self.current()
            if token:
                return token
            token = await self._login()
            await self.switch(token)
            return token

    async def switch(self, token: str) -> None:
        """Use `token` from now on, in every process (an answer carried it)."""
        await self._redis.set(self.key, token, ex=TOKEN_TTL_SECONDS)

    async def drop(self, failing: str) -> bool:
        """Forget `failing` if it is still the shared token; True when it was."""
        return bool(await self._drop_script(keys=[self.key], args=[failing]))
