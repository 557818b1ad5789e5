"""Building (or refusing to build) HTTP responses."""

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from sims.errors import SimError
from sims.faults import Fault

_FAULT_BODIES = {
    "json": ("application/json", '{{"error": "SimulatedFault", "status": {status}}}'),
    "text": ("text/plain", "{status} {reason}"),
    "html": ("text/html", "<html><body><h1>{status} {reason}</h1></body></html>"),
}


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return raw_json_response(orjson.dumps(payload), status, headers)


def raw_json_response(
    body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def error_response(error: SimError) -> web.Response:
    return json_response({"error": error.error, "message": error.message}, error.status)


def fault_response(fault: Fault) -> web.Response:
    """The canned answer of a `status` fault, in the body type it asks for."""
    content_type, template = _FAULT_BODIES[fault.body]
    reason = web.Response(status=fault.status).reason
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    return web.Response(
        text=template.format(status=fault.status, reason=reason),
        status=fault.status,
        headers=headers,
        content_type=content_type,
    )


def drop_connection(request: web.Request) -> web.Response:
    """Close the TCP connection so the client gets no answer at all (a reset / empty reply).

    aiohttp still wants a response object from the handler; writing it to the closed
    transport fails quietly and aiohttp logs it as a client that went away.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)
