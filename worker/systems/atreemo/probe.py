"""A check that Atreemo's ingestion URL answers, for `pointsync doctor`, that can deliver
nothing [assumed, as everything about Atreemo].

Atreemo has no read-only call, and it processes every signed event it is sent (a receipt
email, a doubled interaction), so the only safe request is one it must refuse: an empty JSON
object, unsigned. The contract has it answer 401 (bad signature) or 400 (not an event); an
answer at all proves DNS, the connection and TLS, and that something refuses unsigned posts
there. ATREEMO_WEBHOOK_SECRET itself cannot be checked without sending a real event.
"""

from __future__ import annotations

import httpx

from worker.base.http import make_client
from worker.base.settings import Settings

PROBE_BODY = b"{}"  # not a Toggle event: no id, no type
# The answers that mean "refused the probe, as the contract says".
REFUSED = frozenset({400, 401})


async def probe(settings: Settings, http: httpx.AsyncClient | None = None) -> httpx.Response:
    """POST the unsigned probe to ATREEMO_WEBHOOK_URL once; the answer, whatever it is.
    Transport failures (DNS, refused connection, TLS, timeout) raise httpx's errors."""
    if settings.ATREEMO_WEBHOOK_URL is None:
        raise ValueError("the Toggle relay is off: ATREEMO_WEBHOOK_URL is not set")
    client = http or make_client("", timeout=settings.HTTP_TIMEOUT_SECONDS,
                                 connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS)
    try:
        return await client.post(str(settings.ATREEMO_WEBHOOK_URL), content=PROBE_BODY,
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": settings.USER_AGENT})
    finally:
        if http is None:
            await client.aclose()
