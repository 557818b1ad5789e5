"""Toggle's documents are valid GraphQL for the contract's schema; costs, numbers, money."""

from __future__ import annotations

from decimal import Decimal

import pytest
from graphql import build_schema, parse, validate

from worker.systems.toggle import documents
from worker.systems.toggle.cards import (
    format_minor,
    from_minor,
    mask_card_number,
    to_minor,
    valid_card_number,
)

# The schema as contract-connectors.md writes it (output types only as far as selected).
SCHEMA = build_schema("""
type Query {
  loginUser(username: String!, password: String!): User
  Products(account_id: Int!): [Product]
  Orders(merchant_transaction_reference: String, created_at_from: String,
         created_at_to: String, page: Int, limit: Int): OrderPage
  Cards(card_reference: String!): CardPage
  LineItems(merchant_transaction_reference: String!): LineItemPage
}
type Mutation {
  createOrder(account_id: Int!, currency: String!, merchant_id: Int!,
              group_fulfilment: Boolean!, auto_fulfil_group_fulfilment: Boolean!, total: Int!,
              sales_channel_id: Int!, merchant_transaction_reference: String, note: String,
              order_items: [OrderItemInput]!): Order
  createBalanceAdjustment(currency: String!, value: Int!, merchant_id: Int!,
                          unit_epos_reference: String!, card_reference: String!,
                          merchant_transaction_reference: String!): Adjustment
  createReversal(merchant_transaction_reference: String!, merchant_id: Int!,
                 unit_epos_reference: String!, ReversalItems: [ReversalItemInput]!): Reversal
}
input OrderItemInput {
  product_id: Int, custom_price_modifier_value: Int, fulfilment_method_id: Int,
  generate_card_reference: Boolean, fulfilment_email: String, message: String,
  discounts: [DiscountInput]
}
input DiscountInput { discount_type_id: Int!, value: Int! }
input ReversalItemInput { line_item_id: Int!, shipping_refund: Boolean }
type User { id: Int }
type Product { id: Int name: String }
type Card {
  id: Int card_reference: String pin: String balance: Int initial_balance: Int
  expiry_time: String card_alias_card_reference: String product_name: String
}
type LineItem { id: Int value: Int Card: Card }
type Order {
  id: Int created_at: String merchant_transaction_reference: String value: Int
  LineItems: [LineItem]
}
type OrderPage { data: [Order] total: Int per_page: Int current_page: Int }
type CardPage { data: [Card] total: Int }
type LineItemPage { data: [LineItem] }
type ValueSplit { tender: Int discount: Int }
type Adjustment { id: Int value: Int LineItem: LineItem ValueSplit: ValueSplit }
type Reversal { id: Int value: Int }
""")


@pytest.mark.parametrize("name", sorted(documents.ALL))
def test_each_document_is_valid_for_the_schema(name) -> None:
    document = parse(documents.ALL[name])

    assert validate(SCHEMA, document) == []
    assert document.definitions[0].name.value == name  # type: ignore[attr-defined]


def test_only_the_order_answer_selects_a_pin() -> None:
    with_pin = [name for name, text in documents.ALL.items() if "pin" in text.split()]

    assert with_pin == ["CreateOrder"]


@pytest.mark.parametrize(("limit", "cost"), [(None, 1), (10, 2), (11, 3), (100, 11)])
def test_a_query_costs_one_plus_one_per_ten_rows(limit, cost) -> None:
    assert documents.query_cost(limit) == cost


@pytest.mark.parametrize(("number", "valid"), [
    ("6301190012345676946", True),
    ("630119001234567694", False),    # 18 digits
    ("63011900123456769461", False),  # 20 digits
    ("6301180012345676946", False),   # another issuer
    ("6301 1900 1234 5676 946", False),
    ("63011900abcdefghijk", False),
])
def test_card_number_rule(number, valid) -> None:
    assert valid_card_number(number) is valid


def test_a_card_number_is_masked_as_the_contract_shows() -> None:
    assert mask_card_number("6301190012345676946") == "6301 19•• •••• ••• 6946"
    assert mask_card_number("6301 1900 1234 5676 946") == "6301 19•• •••• ••• 6946"


def test_a_short_alias_shows_its_last_four_only() -> None:
    assert mask_card_number("12345678") == "•••• 5678"
    assert mask_card_number("1234567890123456") == "1234 56•• •••• 3456"
    assert mask_card_number("") == ""


@pytest.mark.parametrize(("amount", "minor"), [
    ("10.00", 1000), ("0.01", 1), ("-2.5", -250), (Decimal("12.34"), 1234), (7, 700),
    ("1000000000000.99", 100000000000099),
])
def test_amounts_convert_to_minor_units_exactly(amount, minor) -> None:
    assert to_minor(amount) == minor


@pytest.mark.parametrize("amount", ["10.001", "ten", "NaN", "Infinity", 10.0, True, None])
def test_inexact_or_foreign_amounts_are_refused(amount) -> None:
    with pytest.raises(ValueError):
        to_minor(amount)


def test_minor_units_convert_back_exactly() -> None:
    assert from_minor(1000) == Decimal("10.00")
    assert format_minor(1000) == "10.00"
    assert format_minor(-5) == "-0.05"
    assert format_minor(100000000000099) == "1000000000000.99"
