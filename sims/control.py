"""The `/_sim/` control API, served on both ports: set-up, faults, statistics, checks."""

from typing import Any

from aiohttp import web
from orjson import Fragment

from sims.clock import now_us
from sims.compare import compare_balances
from sims.control_api import Controls, add_shared_routes
from sims.errors import SimError, bad_request
from sims.faults import parse_fault
from sims.guids import is_guid
from sims.inputs import integer, read_object, time_us
from sims.money import cents_to_json, json_to_cents
from sims.responses import json_response
from sims.seed import plan_from_json, seed
from sims.state import STATE, SimState
from sims.stats import Stats

_RANDOM_MAX_CENTS = 10_000_000  # random mutations pick balances up to 99,999.99 points
_LISTED = 10  # ids echoed back by seed and mutate_random


def add_routes(app: web.Application) -> None:
    add_shared_routes(app, CONTROLS)
    app.router.add_post("/_sim/seed", seed_accounts)
    app.router.add_post("/_sim/accounts", create_accounts)
    app.router.add_post("/_sim/mutations", append_mutations)
    app.router.add_post("/_sim/mutate_random", mutate_random)
    app.router.add_post("/_sim/jobs/expire", expire_jobs)
    app.router.add_post("/_sim/tokens/revoke", revoke_tokens)
    app.router.add_get("/_sim/engage/balance/{contact}", engage_balance)
    app.router.add_post("/_sim/engage/set-times", engage_set_times)
    app.router.add_get("/_sim/treazure/account/{account}", treazure_account)
    app.router.add_post("/_sim/compare", compare)


def _state(request: web.Request) -> SimState:
    return request.app[STATE]


def _configure(state: SimState, changes: dict[str, Any]) -> None:
    state.config = state.config.updated(changes)


def _reset_stats(state: SimState) -> None:
    state.stats = Stats()


CONTROLS = Controls(
    state=_state,
    parse_fault=lambda _state, spec: parse_fault(spec),
    stats=lambda state: state.stats.as_json(state.faults.pending()),
    reset_stats=_reset_stats,
    config=lambda state: state.config.as_json(),
    configure=_configure,
)


async def seed_accounts(request: web.Request) -> web.Response:
    plan = plan_from_json(await read_object(request))
    ids = seed(_state(request), plan)
    return json_response({"contacts": ids[:_LISTED], "count": len(ids)})


async def create_accounts(request: web.Request) -> web.Response:
    """Specific accounts: {"accounts": [{accountNumber, balance, mutatedAt?, in_engage?,
    engage_balance?}]}; all are checked before any is created."""
    state = _state(request)
    specs = _list(await read_object(request), "accounts")
    ids = [spec.get("accountNumber") for spec in specs]
    if not all(is_guid(account) for account in ids):
        raise bad_request("every accountNumber must be a GUID string")
    if len(set(ids)) != len(ids) or not state.ledger.index.keys().isdisjoint(ids):
        raise SimError(409, "AccountExists", "an accountNumber is repeated or exists already")
    now = now_us()
    in_engage = [spec.get("in_engage", True) for spec in specs]
    if not all(isinstance(flag, bool) for flag in in_engage):
        raise bad_request("in_engage must be true or false")
    state.open_accounts(
        ids,
        [_cents(spec, "balance") for spec in specs],
        [time_us(spec, "mutatedAt", now) for spec in specs],
        bytes(in_engage),
        [_cents(spec, "engage_balance", 0) for spec in specs],
    )
    return json_response({"created": len(ids)})


async def append_mutations(request: web.Request) -> web.Response:
    """Log entries {accountNumber, balance, mutatedAt?}, e.g. duplicates or out-of-order ones.
    An entry sets the current balance only if it is the account's newest."""
    state = _state(request)
    now = now_us()
    mutations = [
        (_known_account(state, spec), _cents(spec, "balance"), time_us(spec, "mutatedAt", now))
        for spec in _list(await read_object(request), "mutations")
    ]
    for account, cents, at_us in mutations:
        state.ledger.record(account, cents, at_us)
    return json_response({"appended": len(mutations)})


async def mutate_random(request: web.Request) -> web.Response:
    """Books a random new balance now on `count` distinct random accounts (repeatable)."""
    state = _state(request)
    ledger, rng = state.ledger, state.rng
    count = integer(await read_object(request), "count", minimum=1)
    if count > len(ledger):
        raise bad_request(f"count exceeds the {len(ledger)} accounts")
    accounts = rng.sample(range(len(ledger)), count)
    for account in accounts:
        old = ledger.balance[account]
        new = rng.randrange(_RANDOM_MAX_CENTS - 1)
        if new >= old:
            new += 1  # skip the old balance: every picked account really changes
        ledger.book(account, new - old, comment="sim mutation", operator_id="sim")
    return json_response(
        {"changed": count, "contacts": [ledger.ids[account] for account in accounts[:_LISTED]]}
    )


async def expire_jobs(request: web.Request) -> web.Response:
    _state(request).jobs.expire_all()
    return json_response({"ok": True})


async def revoke_tokens(request: web.Request) -> web.Response:
    _state(request).tokens.revoke_all()
    return json_response({"ok": True})


async def engage_balance(request: web.Request) -> web.Response:
    state = _state(request)
    account = state.ledger.index.get(request.match_info["contact"])
    if account is None or not state.follower.known[account]:
        return json_response({"error": "ContactNotFound"}, 404)
    return json_response(
        {
            "balance": Fragment(cents_to_json(state.follower.balance[account])),
            "set_count": state.follower.set_count[account],
            "set_at_us": state.follower.set_at_us[account],
        }
    )


async def engage_set_times(request: web.Request) -> web.Response:
    """When Engage last took each contact's balance: {"contactIds": [...]} → {"items": {id:
    {setAtUs (null if never), setCount, balance} or null for a contact Engage lacks}}."""
    state = _state(request)
    ids = (await read_object(request)).get("contactIds")
    if not isinstance(ids, list) or not all(isinstance(contact, str) for contact in ids):
        raise bad_request("contactIds must be a list of strings")
    return json_response({"items": {contact: _set_time(state, contact) for contact in ids}})


def _set_time(state: SimState, contact: str) -> dict[str, Any] | None:
    account = state.ledger.index.get(contact)
    follower = state.follower
    if account is None or not follower.known[account]:
        return None
    return {
        "setAtUs": follower.set_at_us[account] or None,
        "setCount": follower.set_count[account],
        "balance": Fragment(cents_to_json(follower.balance[account])),
    }


async def treazure_account(request: web.Request) -> web.Response:
    state = _state(request)
    ledger = state.ledger
    account = ledger.index.get(request.match_info["account"])
    if account is None:
        return json_response({"error": "AccountNotFound"}, 404)
    return json_response(
        {
            "accountNumber": ledger.ids[account],
            "balance": Fragment(cents_to_json(ledger.balance[account])),
            "history_length": ledger.history_length(account),
        }
    )


async def compare(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_object(request, empty_ok=True)
    since_us = time_us(body, "since") if body.get("since") is not None else None
    return json_response(compare_balances(state.ledger, state.follower, since_us))


def _list(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = body.get(name)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise bad_request(f"{name} must be a list of objects")
    return items


def _cents(spec: dict[str, Any], name: str, default: int | None = None) -> int:
    """A non-negative amount with at most two decimals, as cents; required if no default."""
    cents = json_to_cents(spec[name]) if name in spec else default
    if cents is None or cents < 0:
        raise bad_request(f"{name} must be a number >= 0 with at most two decimals")
    return cents


def _known_account(state: SimState, spec: dict[str, Any]) -> int:
    number = spec.get("accountNumber")
    account = state.ledger.index.get(number) if isinstance(number, str) else None
    if account is None:
        raise SimError(404, "AccountNotFound", f"no account {number!r}")
    return account
