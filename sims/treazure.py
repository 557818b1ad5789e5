"""The simulated Treazure LoyaltyVault API (contract §Treazure)."""

from typing import Any

from aiohttp import web
from orjson import Fragment

from sims.balance_pages import render_page
from sims.endpoint import api_endpoint
from sims.errors import SimError, bad_request
from sims.inputs import optional_text, read_object, time_us
from sims.money import cents_to_json, json_to_cents
from sims.responses import json_response, raw_json_response
from sims.state import STATE

VAULT = "/api/v1.0/LoyaltyVault"
JOBS = f"{VAULT}/Balances/Jobs"
MAX_COMMENT = 100


def add_routes(app: web.Application) -> None:
    account = f"{VAULT}/Account/{{account}}"
    app.router.add_post("/identity/connect/token", api_endpoint("treazure.token", issue_token))
    app.router.add_post(
        f"{VAULT}/Balances/Get",
        api_endpoint("treazure.balances_start", start_balances_job, require_token),
    )
    app.router.add_get(
        f"{JOBS}/{{job_id}}/result",
        api_endpoint("treazure.balances_result", balances_result, require_token),
    )
    app.router.add_post(
        f"{account}/Transaction", api_endpoint("treazure.transaction", transact, require_token)
    )
    app.router.add_get(
        f"{account}/LoyaltyPrograms/{{definition}}/History",
        api_endpoint("treazure.history", history, require_token),
    )
    app.router.add_get(account, api_endpoint("treazure.account", get_account, require_token))


def require_token(request: web.Request) -> web.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and request.app[STATE].tokens.valid(token.strip()):
        return None
    return json_response(
        {"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


async def issue_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config
    form = await request.post()
    credentials = (form.get("client_id"), form.get("client_secret"))
    if credentials != (config.client_id, config.client_secret):
        return json_response({"error": "invalid_client"}, 401)
    if form.get("grant_type") != "client_credentials":
        return json_response({"error": "unsupported_grant_type"}, 400)
    if "api_loyaltyvault" not in str(form.get("scope", "")).split():
        return json_response({"error": "invalid_scope"}, 400)
    token = state.tokens.issue(config.token_ttl)
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": int(config.token_ttl)}
    )


async def start_balances_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_object(request)
    from_us, to_us = time_us(body, "mutatedFrom"), time_us(body, "mutatedTo")
    if from_us >= to_us:
        raise bad_request("mutatedFrom must be before mutatedTo")
    _check_loyalty_id(body.get("loyaltyPointDefinitionId"), state.config.loyalty_id)
    entries = state.ledger.window(from_us, to_us)
    job_id = state.jobs.start(entries, state.config.job_ttl, state.config.job_running_polls)
    return json_response({"href": f"{JOBS}/{job_id}"}, 202)


async def balances_result(request: web.Request) -> web.Response:
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    job = state.jobs.get(job_id)
    if job is None:
        return json_response({"error": "JobNotFound"}, 404)
    if job.expired():
        return json_response({"error": "JobExpired"}, 410)
    page = request.query.get("page", "1")
    if not page.isdigit() or int(page) < 1:
        raise bad_request("page must be a positive integer")
    if job.running_polls > 0:
        job.running_polls -= 1
        retry_after = state.config.job_retry_after
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return json_response({"status": "Running"}, 202, headers)
    body = render_page(
        state.ledger,
        job.entries,
        int(page),
        state.config.page_size,
        state.config.loyalty_id,
        f"{JOBS}/{job_id}/result",
    )
    return raw_json_response(body)


async def transact(request: web.Request) -> web.Response:
    state = request.app[STATE]
    amount, context = _parse_transaction(await read_object(request), state.config.loyalty_id)
    account = _account(request)
    if state.ledger.balance[account] + amount < 0:
        return json_response({"error": "InsufficientBalance"}, 422)
    state.ledger.book(
        account,
        amount,
        comment=context["comment"],
        operator_id=context["operatorId"],
        receipt_nr=context["receiptNr"],
    )
    return _account_response(request, account)


async def history(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = _account(request)
    if request.match_info["definition"] != state.config.loyalty_id:
        return json_response({"error": "LoyaltyProgramNotFound"}, 404)
    from_us = time_us(request.query, "from") if "from" in request.query else None
    return json_response(state.ledger.history(account, from_us))


async def get_account(request: web.Request) -> web.Response:
    return _account_response(request, _account(request))


def _account(request: web.Request) -> int:
    """The position of the account named in the path; unknown → 404."""
    account = request.app[STATE].ledger.index.get(request.match_info["account"])
    if account is None:
        raise SimError(404, "AccountNotFound")
    return account


def _account_response(request: web.Request, account: int) -> web.Response:
    state = request.app[STATE]
    program = {
        "loyaltyPointDefinitionId": state.config.loyalty_id,
        "balance": Fragment(cents_to_json(state.ledger.balance[account])),
    }
    return json_response({"accountNumber": state.ledger.ids[account], "loyaltyPrograms": [program]})


def _check_loyalty_id(value: object, expected: str) -> None:
    if value != expected:
        raise bad_request(f"loyaltyPointDefinitionId must be {expected!r}")


def _parse_transaction(body: dict[str, Any], loyalty_id: str) -> tuple[int, dict[str, Any]]:
    """(amount in cents, + for loads and - for redemptions, context fields) of a booking."""
    programs = body.get("loyaltyPrograms")
    if not isinstance(programs, list) or len(programs) != 1 or not isinstance(programs[0], dict):
        raise bad_request("loyaltyPrograms must hold exactly one program")
    program = programs[0]
    _check_loyalty_id(program.get("loyaltyPointDefinitionId"), loyalty_id)
    loads, redemptions = program.get("loads"), program.get("redemptions")
    if bool(loads) == bool(redemptions):
        raise bad_request("exactly one of loads and redemptions is required")
    movements = loads or redemptions
    if not isinstance(movements, list) or len(movements) != 1 or not isinstance(movements[0], dict):
        raise bad_request("loads/redemptions must hold exactly one entry")
    cents = json_to_cents(movements[0].get("value"))
    if cents is None or cents <= 0:
        raise bad_request("value must be a positive number with at most two decimals")
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise bad_request("context must be an object")
    fields = {name: optional_text(context, name) for name in ("comment", "receiptNr", "operatorId")}
    if len(fields["comment"] or "") > MAX_COMMENT:
        raise bad_request(f"context.comment is longer than {MAX_COMMENT} characters")
    return (cents if loads else -cents), fields
