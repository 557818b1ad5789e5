"""Contlo's track API: `POST /v1/track` with `X-API-KEY`, as the contract words it.

200 `{"success": true}` (recorded in arrival order, never deduplicated); 401 a wrong key;
400 `{"success": false, "message"}` for a malformed body or one with neither email nor
phone number; 429 + Retry-After above 10 requests/s per key."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from sims.relays.destination import Destination, destination_app
from sims.responses import json_response

API_KEY = "sim-contlo-key"
RATE_LIMIT = 10
PATH = "/v1/track"
EVENTS = "/_sim/contlo/events"
NO_CONTACT = "email or phone_number is required"


def _refused(message: str, status: int = 400) -> web.Response:
    return json_response({"success": False, "message": message}, status)


def _check(request: web.Request, body: bytes, sim: Destination) -> web.Response | None:
    given = request.headers.get("X-API-KEY", "")
    if given and hmac.compare_digest(given.encode("utf-8", "replace"),
                                     sim.credential.encode()):
        return None
    return _refused("Unauthorized: invalid X-API-KEY", 401)


def _throttled() -> web.Response:
    return json_response({"success": False, "message": "Too many requests"}, 429,
                         headers={"Retry-After": "1"})


async def _track(request: web.Request, sim: Destination) -> web.Response:
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _refused("body is not JSON")
    if not isinstance(body, dict):
        return _refused("body must be a JSON object")
    if not isinstance(body.get("event"), str) or not body["event"]:
        return _refused("event is required")
    for name in ("properties", "profile_properties"):
        if not isinstance(body.get(name, {}), dict):
            return _refused(f"{name} must be an object")
    if not body.get("email") and not body.get("phone_number"):
        return _refused(NO_CONTACT)
    sim.record({"event": body["event"], "email": body.get("email"),
                "phone_number": body.get("phone_number"),
                "properties": body.get("properties", {}),
                "profile_properties": body.get("profile_properties", {})})
    return json_response({"success": True})


def contlo_state(clock: Callable[[], float] = time.monotonic, api_key: str = API_KEY,
                 rate_limit: int = RATE_LIMIT) -> Destination:
    return Destination("contlo", api_key, rate_limit, clock=clock)


def contlo_app(state: Destination) -> web.Application:
    return destination_app(state, PATH, _track, _check, _throttled, EVENTS)
