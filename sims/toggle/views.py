"""The shapes the resolvers answer with (plain dicts: graphql-core picks the selected keys)."""

from typing import Any

from sims.clock import format_us
from sims.toggle.state import Card, LineItem, Order


def card(found: Card) -> dict[str, Any]:
    return {
        "id": found.id,
        "card_reference": found.card_reference,
        "pin": found.pin,
        "balance": found.balance,
        "initial_balance": found.initial_balance,
        "expiry_time": found.expiry_time,
        "card_alias_card_reference": found.card_alias_card_reference,
        "product_name": found.product_name,
    }


def line_item(item: LineItem) -> dict[str, Any]:
    return {"id": item.id, "value": item.value, "Card": card(item.card)}


def order(found: Order) -> dict[str, Any]:
    return {
        "id": found.id,
        "created_at": format_us(found.created_us),
        "merchant_transaction_reference": found.reference,
        "value": found.value,
        "total": found.total,
        "LineItems": [line_item(item) for item in found.line_items],
    }
