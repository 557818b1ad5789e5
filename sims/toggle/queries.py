"""Resolvers of Toggle's queries: loginUser, Products, Orders, Cards, LineItems."""

from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import GraphQLResolveInfo

from sims.toggle import views
from sims.toggle.call import Call, state_of
from sims.toggle.errors import INVALID_CREDENTIALS, ToggleError, invalid

DEFAULT_LIMIT = 10  # Orders' page size when the query names none [assumed]
MAX_LIMIT = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def login_user(_root: None, info: GraphQLResolveInfo, username: str,
               password: str) -> dict[str, Any]:
    call: Call = info.context
    state = call.state
    config = state.config
    if (username, password) != (config.username, config.password):
        raise ToggleError(INVALID_CREDENTIALS)
    state.stats.logins += 1
    call.new_token = state.tokens.issue(config.user_id, config.token_ttl)
    return {"id": config.user_id}


def products(_root: None, info: GraphQLResolveInfo, account_id: int) -> list[dict[str, Any]]:
    state = state_of(info)
    if account_id != state.config.account_id:
        raise invalid("account_id", "The selected account id is invalid.")
    return [{"id": pid, "name": name} for pid, name in state.products.items()]


def orders(_root: None, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    state = state_of(info)
    page, limit = args.get("page") or 1, args.get("limit") or DEFAULT_LIMIT
    if page < 1:
        raise invalid("page", "The page must be at least 1.")
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"The limit must be between 1 and {MAX_LIMIT}.")
    since, until = _time(args, "created_at_from"), _time(args, "created_at_to")
    reference = args.get("merchant_transaction_reference")
    found = [
        order for order in state.orders.values()  # ids rise with time: oldest first
        if (reference is None or order.reference == reference)
        and (since is None or order.created_us >= since)
        and (until is None or order.created_us <= until)
    ]
    start = (page - 1) * limit
    return {
        "data": [views.order(order) for order in found[start:start + limit]],
        "total": len(found),
        "per_page": limit,
        "current_page": page,
    }


def cards(_root: None, info: GraphQLResolveInfo, card_reference: str) -> dict[str, Any]:
    card = state_of(info).find_card(card_reference)
    data = [] if card is None else [views.card(card)]
    return {"data": data, "total": len(data)}


def line_items(_root: None, info: GraphQLResolveInfo,
               merchant_transaction_reference: str) -> dict[str, Any]:
    items = state_of(info).created_by(merchant_transaction_reference)
    return {"data": [views.line_item(item) for item in items], "total": len(items)}


def _time(args: dict[str, Any], name: str) -> int | None:
    text = args.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(name, f"The {name} is not a valid date.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is UTC [assumed]
    return (moment - _EPOCH) // timedelta(microseconds=1)


RESOLVERS = {
    "loginUser": login_user,
    "Products": products,
    "Orders": orders,
    "Cards": cards,
    "LineItems": line_items,
}
