"""`POST /graphql`: faults, then the token, then the credits, then graphql-core runs it."""

import asyncio
from typing import Any

import orjson
from aiohttp import web
from graphql import execute_sync

from sims.faults import Fault
from sims.responses import drop_connection, fault_response, json_response
from sims.toggle.call import Call
from sims.toggle.errors import THROTTLED, UNAUTHORIZED, formatted
from sims.toggle.faults import ANY
from sims.toggle.prepare import Prepared, prepare
from sims.toggle.schema import SCHEMA
from sims.toggle.state import ToggleState

TOGGLE = web.AppKey("toggle", ToggleState)


async def graphql_endpoint(request: web.Request) -> web.StreamResponse:
    sim = request.app[TOGGLE]
    body = await _body(request)
    if body is None:
        sim.stats.arrived["invalid"] += 1
        sim.stats.answered("invalid", 400)
        message = "The body must be a JSON object with a `query` string."
        return _reply(sim, {"errors": [{"message": message, "customer_facing": False}]}, 0, 0,
                      status=400)
    prepared = prepare(body)
    label = prepared.label
    sim.stats.arrived[label] += 1
    fault = sim.faults.take(label) or sim.faults.take(ANY)
    if fault is not None and fault.kind == "latency":
        await asyncio.sleep(fault.seconds)
    if fault is not None and fault.kind in ("status", "drop"):
        sim.stats.answered(label, fault.status if fault.kind == "status" else "drop")
        return fault_response(fault) if fault.kind == "status" else drop_connection(request)
    response = _answer(sim, request, prepared, _is(fault, "throttle"))
    if _is(fault, "drop_after_apply"):
        sim.stats.answered(label, "drop")
        return drop_connection(request)
    sim.stats.answered(label, response.status)
    return response


def _is(fault: Fault | None, kind: str) -> bool:
    return fault is not None and fault.kind == kind


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return None
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return None
    return body


def _answer(sim: ToggleState, request: web.Request, prepared: Prepared,
            throttle: bool) -> web.Response:
    if prepared.errors:  # not GraphQL, or not this schema's: nothing runs, nothing is charged
        return _reply(sim, {"errors": [formatted(e) for e in prepared.errors]}, 0, 0)
    token = _bearer(request)
    if prepared.needs_token and (token is None or not sim.tokens.valid(token)):
        sim.stats.unauthorized += 1
        refusal = {"message": UNAUTHORIZED, "customer_facing": False}
        return _reply(sim, {"errors": [refusal]}, prepared.cost, 0)
    if throttle or not sim.credits.try_spend(prepared.cost):
        sim.stats.throttled += 1
        return _reply(sim, {"errors": [{"message": THROTTLED}]}, prepared.cost, 0, status=429)
    sim.stats.credits_spent += prepared.cost
    call = Call(sim)
    assert prepared.document is not None
    result = execute_sync(SCHEMA, prepared.document, context_value=call,
                          variable_values=prepared.variables,
                          operation_name=prepared.operation_name)
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [formatted(error) for error in result.errors]
    new_token = call.new_token
    if new_token is None and token is not None and prepared.needs_token:
        config = sim.config
        new_token = sim.tokens.refreshed(token, config.user_id, config.token_ttl,
                                         config.token_refresh_after, config.token_grace)
    return _reply(sim, payload, prepared.cost, prepared.cost, token=new_token)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _reply(sim: ToggleState, payload: dict[str, Any], requested: int, actual: int,
           status: int = 200, token: str | None = None) -> web.Response:
    payload["extensions"] = {"cost": {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {"maximumAvailable": sim.credits.maximum,
                           "currentlyAvailable": sim.credits.available()},
    }}
    # Both headers carry the token; `Authorization` is Toggle's deprecated spelling.
    headers = {"X-Authorization": f"Bearer {token}", "Authorization": f"Bearer {token}"} \
        if token else None
    return json_response(payload, status, headers)
