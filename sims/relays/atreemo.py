"""Atreemo's Toggle ingestion endpoint [assumed, as the contract says]: `POST /ingest/toggle`
(ATREEMO_WEBHOOK_URL is the simulator's URL plus that path) with Toggle's envelope signed
`Toggle-Signature: <hex HMAC-SHA256(secret, raw body)>` by the endpoint's own secret.

200 accepted (recorded, in arrival order, never deduplicated); 401 bad signature; 400 a body
that is not a Toggle event (the body says why); 429 + Retry-After above 20 requests/s."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from sims.relays.destination import Destination, destination_app
from sims.responses import json_response

SECRET = "sim-atreemo-secret"
RATE_LIMIT = 20
PATH = "/ingest/toggle"  # ATREEMO_WEBHOOK_URL is the simulator's URL plus this path
DELIVERIES = "/_sim/atreemo/deliveries"


def _check(request: web.Request, body: bytes, sim: Destination) -> web.Response | None:
    given = request.headers.get("Toggle-Signature", "")
    wanted = hmac.new(sim.credential.encode(), body, hashlib.sha256).hexdigest()
    if given and hmac.compare_digest(given.encode("utf-8", "replace"), wanted.encode()):
        return None
    return json_response({"error": "Unauthorized", "message": "bad Toggle-Signature"}, 401)


def _throttled() -> web.Response:
    return json_response({"error": "TooManyRequests", "message": "rate limit exceeded"}, 429,
                         headers={"Retry-After": "1"})


async def _ingest(request: web.Request, sim: Destination) -> web.Response:
    raw = await request.read()
    try:
        event: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_response({"error": "BadRequest", "message": "body is not JSON"}, 400)
    if not isinstance(event, dict) or "id" not in event or not isinstance(event.get("type"),
                                                                          str):
        return json_response({"error": "BadRequest",
                              "message": "not a Toggle event: id and type are required"}, 400)
    sim.record({"id": event["id"], "type": event["type"], "event": event,
                "raw": raw.decode("utf-8", "replace")})
    return json_response({"ok": True})


def atreemo_state(clock: Callable[[], float] = time.monotonic, secret: str = SECRET,
                  rate_limit: int = RATE_LIMIT) -> Destination:
    return Destination("atreemo", secret, rate_limit, clock=clock)


def atreemo_app(state: Destination) -> web.Application:
    return destination_app(state, PATH, _ingest, _check, _throttled, DELIVERIES)
