"""Contlo's `POST /v1/track`: one call per relayed event.

One attempt per call: the relay owns retries. Answers are classified with
worker.base.http's classes: 200 tracked; 400 `{"success": false, "message"}` (no email
and no phone, a malformed body) and 401 (a bad CONTLO_API_KEY) `Rejected` with Contlo's
message; 429 (with Retry-After when given), 5xx and a connection that never opened
`Retryable`; a read timeout or reset after sending `Ambiguous` (Contlo cannot be asked and
does not deduplicate [assumed])."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from worker.base.destination import DestinationClient
from worker.base.ratelimit import SlotLimiter
from worker.base.settings import Settings

SERVICE = "contlo"
TRACK_PATH = "/v1/track"


def track_body(event: str, email: str | None, phone: str | None,
               properties: dict[str, Any], profile_properties: dict[str, Any]) -> bytes:
    """The JSON Contlo takes; an absent email or phone is left out, not sent as null."""
    body: dict[str, Any] = {"event": event}
    if email:
        body["email"] = email
    if phone:
        body["phone_number"] = phone
    body["properties"] = properties
    body["profile_properties"] = profile_properties
    return orjson.dumps(body)


class ContloClient(DestinationClient):
    service = SERVICE

    def __init__(
        self,
        settings: Settings,
        limiter: SlotLimiter,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if settings.CONTLO_API_KEY is None:
            raise ValueError("the Nector relay is off: CONTLO_API_KEY is not set")
        super().__init__(settings, limiter, str(settings.CONTLO_BASE_URL), http)
        # Sent on every request, also through a client handed in (tests, shared pools).
        self._headers = {
            "X-API-KEY": settings.CONTLO_API_KEY.get_secret_value(),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": settings.USER_AGENT,
        }

    async def track(
        self,
        event: str,
        email: str | None,
        phone: str | None,
        properties: dict[str, Any],
        profile_properties: dict[str, Any],
    ) -> None:
        """Track one event for the profile with this email and/or phone; return once Contlo
        accepted it."""
        await self.deliver_request(
            "POST", TRACK_PATH,
            track_body(event, email, phone, properties, profile_properties), self._headers)
