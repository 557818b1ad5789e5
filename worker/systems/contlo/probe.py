"""A check that Contlo takes CONTLO_API_KEY, for `pointsync doctor`, that tracks nothing
[assumed].

Contlo's API (as the contract has it) offers no read-only call. Every accepted track runs
the automations the event triggers, so the probe is a track Contlo must refuse: an event
name no automation uses, with neither email nor phone number, which the contract answers
400 ("email or phone number is mandatory") with a good key and 401 with a bad one. That
Contlo checks the key before the body is assumed: a 400 says the key was not refused.
"""

from __future__ import annotations

import httpx

from worker.base.http import make_client
from worker.base.settings import Settings
from worker.systems.contlo.client import TRACK_PATH, track_body

PROBE_EVENT = "pointsync doctor probe"
# The answer that means "the key was taken and the contactless track refused".
KEY_TAKEN = 400


async def probe(settings: Settings, http: httpx.AsyncClient | None = None) -> httpx.Response:
    """POST the contactless track once; the answer, whatever it is. Transport failures
    (DNS, refused connection, TLS, timeout) raise httpx's errors."""
    if settings.CONTLO_API_KEY is None:
        raise ValueError("the Nector relay is off: CONTLO_API_KEY is not set")
    client = http or make_client(str(settings.CONTLO_BASE_URL),
                                 timeout=settings.HTTP_TIMEOUT_SECONDS,
                                 connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS)
    headers = {"X-API-KEY": settings.CONTLO_API_KEY.get_secret_value(),
               "Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": settings.USER_AGENT}
    try:
        return await client.post(TRACK_PATH, headers=headers,
                                 content=track_body(PROBE_EVENT, None, None, {}, {}))
    finally:
        if http is None:
            await client.aclose()
