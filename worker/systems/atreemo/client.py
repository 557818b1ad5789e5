"""Atreemo's Toggle ingestion endpoint: one delivery is one POST of Toggle's envelope,
unchanged, signed with Atreemo's own secret [assumed: Atreemo publishes no API].

One attempt per call: the relay owns retries (it spreads them over RELAY_MAX_AGE_SECONDS and
records each outcome). The answer is classified with worker.base.http's classes:
- 200: delivered;
- 400 (refused for good, the body says why), 401 (our ATREEMO_WEBHOOK_SECRET), other 4xx:
  `Rejected`;
- 429 (with Retry-After when given), 5xx, a connection that never opened: `Retryable`;
- a read timeout or a reset after the request went out: `Ambiguous` — Atreemo cannot be
  asked whether it got it, and it does not deduplicate.
"""

from __future__ import annotations

import httpx

from worker.base.destination import DestinationClient
from worker.base.ratelimit import SlotLimiter
from worker.base.settings import Settings
from worker.base.signatures import hmac_sha256

SERVICE = "atreemo"
SIGNATURE_HEADER = "Toggle-Signature"


def toggle_signature(secret: str, body: bytes) -> str:
    """Toggle's signature scheme, which Atreemo checks: lowercase hex HMAC-SHA256."""
    return hmac_sha256(secret.encode("utf-8"), body).hex()


class AtreemoClient(DestinationClient):
    service = SERVICE

    def __init__(
        self,
        settings: Settings,
        limiter: SlotLimiter,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if settings.ATREEMO_WEBHOOK_URL is None or settings.ATREEMO_WEBHOOK_SECRET is None:
            raise ValueError("the Toggle relay is off: ATREEMO_WEBHOOK_URL and "
                             "ATREEMO_WEBHOOK_SECRET are not set")
        super().__init__(settings, limiter, "", http)
        self._url = str(settings.ATREEMO_WEBHOOK_URL)
        self._secret = settings.ATREEMO_WEBHOOK_SECRET.get_secret_value()
        self._user_agent = settings.USER_AGENT

    def headers_for(self, raw_body: bytes) -> dict[str, str]:
        return {
            SIGNATURE_HEADER: toggle_signature(self._secret, raw_body),
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
        }

    async def deliver(self, raw_body: bytes) -> None:
        """POST Toggle's envelope byte for byte; return once Atreemo accepted it (2xx)."""
        await self.deliver_request("POST", self._url, raw_body, self.headers_for(raw_body))
