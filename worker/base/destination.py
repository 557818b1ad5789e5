"""What the relays' destination clients share: one HTTP client of their own (or one handed
in), and one rate-limited attempt per delivery. The relay owns retries: it spreads them over
RELAY_MAX_AGE_SECONDS and records each outcome."""

from __future__ import annotations

from typing import Self

import httpx

from worker.base.http import Retryable, deliver_once, make_client
from worker.base.ratelimit import SlotLimiter
from worker.base.settings import Settings


class DestinationClient:
    """A relay destination's HTTP side: `deliver_request` waits for a slot of the destination's rate
    limit, then sends once (classified by `deliver_once`)."""

    service: str

    def __init__(self, settings: Settings, limiter: SlotLimiter, base_url: str,
                 http: httpx.AsyncClient | None = None) -> None:
        self._limiter = limiter
        self._http = http or make_client(
            base_url,
            timeout=settings.HTTP_TIMEOUT_SECONDS,
            connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def deliver_request(self, method: str, url: str, content: bytes,
                              headers: dict[str, str]) -> None:
        """One attempt; returns once the destination accepted it (2xx)."""
        try:
            await self._limiter.acquire()
        except Exception as exc:  # Redis, say, that keeps the shared limit: nothing went out
            raise Retryable(self.service,
                            f"rate limit not reachable, not sent: {type(exc).__name__}: {exc}"
                            ) from exc
        request = self._http.build_request(method, url, content=content, headers=headers)
        await deliver_once(self._http, self.service, request)
