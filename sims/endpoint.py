"""The wrapper every simulated API endpoint runs in: latency, faults, auth guard, stats."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sims.errors import SimError
from sims.faults import Fault, drawn_fault
from sims.responses import drop_connection, error_response, fault_response, json_response
from sims.state import STATE, SimState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A guard answers a request it refuses (bad credentials, rate limit) and returns None otherwise.
Guard = Callable[[web.Request], web.Response | None]


def api_endpoint(target: str, handler: Handler, guard: Guard | None = None) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        state.stats.arrived(target, time.monotonic())
        delay = state.config.latency.get(target)
        if delay:
            await asyncio.sleep(delay)
        response = await _respond(request, handler, guard, _fault_for(state, target))
        if response is None:
            state.stats.answered(target, "drop")
            return drop_connection(request)
        state.stats.answered(target, response.status)
        return response

    return serve


def _fault_for(state: SimState, target: str) -> Fault | None:
    """A queued fault first; else one drawn by the configured shares."""
    queued = state.faults.take(target)
    if queued is not None:
        return queued
    return drawn_fault(state.config.fault_shares.get(target, {}), state.fault_rng)


async def _respond(
    request: web.Request, handler: Handler, guard: Guard | None, fault: Fault | None
) -> web.StreamResponse | None:
    """The answer to send, or None when the connection is to be dropped instead."""
    if fault is None:
        return await _serve_guarded(request, handler, guard)
    match fault.kind:
        case "status":
            return fault_response(fault)
        case "expire":
            return json_response({"error": "JobExpired"}, 410)
        case "drop":
            return None
        case "latency":
            await asyncio.sleep(fault.seconds)
            return await _serve_guarded(request, handler, guard)
        case "drop_after_apply":
            await _serve_guarded(request, handler, guard)
            return None
    raise AssertionError(f"unhandled fault kind {fault.kind}")


async def _serve_guarded(
    request: web.Request, handler: Handler, guard: Guard | None
) -> web.StreamResponse:
    refusal = guard(request) if guard is not None else None
    if refusal is not None:
        return refusal
    try:
        return await handler(request)
    except SimError as error:
        return error_response(error)


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns a SimError raised by a `/_sim/` control handler into its JSON error answer."""
    try:
        return await handler(request)
    except SimError as error:
        return error_response(error)
