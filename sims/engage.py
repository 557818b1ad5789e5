"""The simulated Voyado Engage point-account API (contract §Engage)."""

import time
import uuid

from aiohttp import web
from orjson import Fragment

from sims.endpoint import api_endpoint
from sims.errors import bad_request
from sims.inputs import read_json
from sims.money import cents_to_json
from sims.responses import json_response
from sims.state import STATE

MAX_BALANCES = 1000


def add_routes(app: web.Application) -> None:
    accounts = "/api/{version:v[23]}/point-accounts"
    app.router.add_post(
        f"{accounts}/balances", api_endpoint("engage.balances", set_balances, check_caller)
    )
    app.router.add_get(accounts, api_endpoint("engage.accounts", point_accounts, check_caller))


def check_caller(request: web.Request) -> web.Response | None:
    """Engage's checks before any work, in order: apikey, User-Agent, rate limit, Content-Type."""
    state = request.app[STATE]
    key = request.headers.get("apikey")
    if key != state.config.api_key:
        return json_response({"message": "Authorization has been denied for this request."}, 401)
    if not request.headers.get("User-Agent", "").strip():
        return json_response({"message": "A User-Agent header is required."}, 400)
    if not state.limiter.admit(key, time.monotonic(), state.config.engage_rate_limit):
        state.stats.engage_429 += 1
        # The contract says Retry-After is only sometimes present: send it on every other 429.
        headers = {"Retry-After": "1"} if state.stats.engage_429 % 2 else None
        return json_response({"message": "Too many requests."}, 429, headers)
    if request.method == "POST" and request.content_type != "application/json":
        return web.Response(status=500, text="An error has occurred")
    return None


async def set_balances(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rows = await read_json(request)
    if not isinstance(rows, list):
        raise bad_request("body must be a JSON array of balances")
    if len(rows) > MAX_BALANCES:
        raise bad_request(f"at most {MAX_BALANCES} balances per request")
    refused = state.follower.set_balances(rows, state.ledger.index, state.config.definition_id)
    state.stats.engage_push_requests += 1
    state.stats.engage_push_items += len(rows)
    return json_response({"transactionId": str(uuid.uuid4()), "notAccepted": refused}, 202)


async def point_accounts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    contact = request.query.get("contactId")
    if not contact:
        raise bad_request("contactId is required")
    account = state.ledger.index.get(contact)
    items = []
    if account is not None and state.follower.known[account]:
        items.append(
            {
                "id": account + 1,
                "contactId": contact,
                "definitionId": state.config.definition_id,
                "balance": Fragment(cents_to_json(state.follower.balance[account])),
                "pendingPoints": 0,
                "balanceExpires": None,
            }
        )
    return json_response(
        {"items": items, "totalCount": len(items), "offset": 0, "count": len(items)}
    )
