"""Resolvers of Toggle's mutations. Each checks everything before it changes anything, so a
refused mutation applies nothing."""

import re
from typing import Any

from graphql import GraphQLResolveInfo

from sims.toggle import views
from sims.toggle.call import state_of
from sims.toggle.errors import (
    DUPLICATE,
    NEGATIVE,
    NO_CARD,
    UNKNOWN_SITE,
    ToggleError,
    invalid,
)
from sims.toggle.state import LineItem, Order, ToggleState

FULFILMENT_EMAIL, FULFILMENT_POST, FULFILMENT_VENUE, FULFILMENT_THIRD_PARTY = 1, 2, 3, 8
SALES_CHANNELS = frozenset({3, 5, 7})  # in store, B2B, guest gratuity
DISCOUNT_TYPES = frozenset({1, 3})  # free of charge, promotion
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create_order(_root: None, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    state = state_of(info)
    _check_account(state, args["account_id"], args["currency"])
    if args["sales_channel_id"] not in SALES_CHANNELS:
        raise invalid("sales_channel_id", "The selected sales channel id is invalid.")
    items = args["order_items"]
    if not items:
        raise invalid("order_items", "The order items field is required.")
    checked = [_order_item(state, n, item) for n, item in enumerate(items)]
    due = sum(value - discount for _, value, discount, _ in checked)
    if args["total"] != due:
        raise invalid("total", f"The total must equal the order items less discounts ({due}).")
    reference = args.get("merchant_transaction_reference")
    _check_unused(state, reference)
    order = Order(state.next_id("order"), state.now_us(), reference, args["total"], [])
    for product, value, _, email in checked:
        card = state.add_card(value, product)
        order.line_items.append(state.add_line_item(value, card, reference))
        if email is not None:
            order.emails.append(email)
    state.orders[order.id] = order
    _claim(state, reference, "order", order.id)
    return {"id": order.id, "LineItems": [views.line_item(item) for item in order.line_items]}


def _check_account(state: ToggleState, account_id: int | None, currency: str) -> None:
    if account_id is not None and account_id != state.config.account_id:
        raise invalid("account_id", "The selected account id is invalid.")
    if currency != state.config.currency:
        raise invalid("currency", "The selected currency is invalid.")


def _order_item(state: ToggleState, n: int, item: dict[str, Any] | None
                ) -> tuple[str, int, int, str | None]:
    """(product name, value, discount, email to send to) of a valid item; else a refusal."""
    field = f"order_items.{n}"
    if item is None:
        raise invalid(field, "The order item must be an object.")
    product = state.products.get(item.get("product_id"))  # type: ignore[arg-type]
    if product is None:
        raise invalid(f"{field}.product_id", "The selected product id is invalid.")
    value = item.get("custom_price_modifier_value")
    if value is None:
        raise invalid(f"{field}.custom_price_modifier_value",
                      "The custom price modifier value field is required.")
    if value < 1:
        raise invalid(f"{field}.custom_price_modifier_value",
                      "The custom price modifier value must be at least 1.")
    method = item.get("fulfilment_method_id")
    if method is None:
        raise invalid(f"{field}.fulfilment_method_id",
                      "The fulfilment method id field is required.")
    if method not in (FULFILMENT_EMAIL, FULFILMENT_POST, FULFILMENT_VENUE,
                      FULFILMENT_THIRD_PARTY):
        raise invalid(f"{field}.fulfilment_method_id",
                      "The selected fulfilment method id is invalid.")
    email = item.get("fulfilment_email")
    if method == FULFILMENT_EMAIL and not email:
        raise invalid(f"{field}.fulfilment_email",
                      "The fulfilment email field is required when fulfilment method id is 1.")
    if email and not _EMAIL.match(email):
        raise invalid(f"{field}.fulfilment_email",
                      "The fulfilment email must be a valid email address.")
    discount = 0
    for d, spec in enumerate(item.get("discounts") or []):
        if spec is None or spec["discount_type_id"] not in DISCOUNT_TYPES:
            raise invalid(f"{field}.discounts.{d}.discount_type_id",
                          "The selected discount type id is invalid.")
        if spec["value"] < 0:
            raise invalid(f"{field}.discounts.{d}.value", "The value must be at least 0.")
        discount += spec["value"]
    if discount > value:
        raise invalid(f"{field}.discounts", "The discounts may not exceed the item's value.")
    return product, value, discount, email if method == FULFILMENT_EMAIL else None


def create_balance_adjustment(_root: None, info: GraphQLResolveInfo,
                              **args: Any) -> dict[str, Any]:
    state = state_of(info)
    _check_account(state, None, args["currency"])
    value, reference = args["value"], args["merchant_transaction_reference"]
    if value == 0:
        raise invalid("value", "The value must not be zero.")
    if not reference:
        raise invalid("merchant_transaction_reference",
                      "The merchant transaction reference field is required.")
    _check_unused(state, reference)
    _check_site(state, args["unit_epos_reference"])
    card = state.find_card(args["card_reference"])
    if card is None:
        raise ToggleError(NO_CARD)
    if card.balance + value < 0:
        raise ToggleError(NEGATIVE)
    card.balance += value
    item = state.add_line_item(value, card, reference)
    adjustment_id = state.next_id("adjustment")
    state.adjustments[adjustment_id] = item
    _claim(state, reference, "adjustment", adjustment_id)
    return {
        "id": adjustment_id,
        "value": value,
        "LineItem": {"id": item.id, "Card": {"card_reference": card.card_reference,
                                             "balance": card.balance}},
        "ValueSplit": {"tender": value, "discount": 0},  # [assumed] all tender
    }


def create_reversal(_root: None, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    state = state_of(info)
    reference = args["merchant_transaction_reference"]
    if not reference:
        raise invalid("merchant_transaction_reference",
                      "The merchant transaction reference field is required.")
    if not args["ReversalItems"]:
        raise invalid("ReversalItems", "The reversal items field is required.")
    _check_unused(state, reference)
    _check_site(state, args["unit_epos_reference"])
    originals = [_reversible(state, n, spec) for n, spec in enumerate(args["ReversalItems"])]
    if len({item.id for item in originals}) != len(originals):
        raise invalid("ReversalItems", "A line item may be reversed only once.")
    for item in originals:
        if item.card.balance - item.value < 0:
            raise ToggleError(NEGATIVE)
    created: list[LineItem] = []
    for item in originals:
        item.card.balance -= item.value
        reversal = state.add_line_item(-item.value, item.card, reference, reverses=item.id)
        item.reversed_by = reversal.id
        created.append(reversal)
    reversal_id = state.next_id("reversal")
    state.reversals[reversal_id] = created
    _claim(state, reference, "reversal", reversal_id)
    return {"id": reversal_id, "value": sum(item.value for item in created)}


def _reversible(state: ToggleState, n: int, spec: dict[str, Any] | None) -> LineItem:
    field = f"ReversalItems.{n}.line_item_id"
    item = state.line_items.get(spec["line_item_id"]) if spec is not None else None
    if item is None:
        raise invalid(field, "The selected line item id is invalid.")
    if item.reverses is not None:
        raise invalid(field, "A reversal cannot be reversed.")
    if item.reversed_by is not None:
        raise invalid(field, "The line item has already been reversed.")
    return item


def _check_unused(state: ToggleState, reference: str | None) -> None:
    if reference and reference in state.references:
        raise ToggleError(DUPLICATE)


def _check_site(state: ToggleState, unit_epos_reference: str) -> None:
    if unit_epos_reference not in state.config.sites.values():
        raise ToggleError(UNKNOWN_SITE)


def _claim(state: ToggleState, reference: str | None, kind: str, created: int) -> None:
    if reference:
        state.references[reference] = (kind, created)


RESOLVERS = {
    "createOrder": create_order,
    "createBalanceAdjustment": create_balance_adjustment,
    "createReversal": create_reversal,
}
