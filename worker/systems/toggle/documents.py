"""The GraphQL documents sent to Toggle, selecting exactly the contract's fields, and what
each costs in throttle credits (contract-connectors.md, "Throttling": costs [assumed])."""

from __future__ import annotations

LOGIN = """
query Login($username: String!, $password: String!) {
  loginUser(username: $username, password: $password) { id }
}"""

PRODUCTS = """
query Products($account_id: Int!) {
  Products(account_id: $account_id) { id name }
}"""

ORDERS = """
query Orders($merchant_transaction_reference: String, $created_at_from: String,
             $created_at_to: String, $page: Int, $limit: Int) {
  Orders(merchant_transaction_reference: $merchant_transaction_reference,
         created_at_from: $created_at_from, created_at_to: $created_at_to,
         page: $page, limit: $limit) {
    data {
      id created_at merchant_transaction_reference value
      LineItems { id value Card { id card_reference balance } }
    }
    total per_page current_page
  }
}"""

CARDS = """
query Cards($card_reference: String!) {
  Cards(card_reference: $card_reference) {
    data {
      id card_reference balance initial_balance expiry_time card_alias_card_reference
      product_name
    }
    total
  }
}"""

LINE_ITEMS = """
query LineItems($merchant_transaction_reference: String!) {
  LineItems(merchant_transaction_reference: $merchant_transaction_reference) {
    data { id value Card { card_reference balance } }
  }
}"""

CREATE_ORDER = """
mutation CreateOrder($account_id: Int!, $currency: String!, $merchant_id: Int!,
                     $group_fulfilment: Boolean!, $auto_fulfil_group_fulfilment: Boolean!,
                     $total: Int!, $sales_channel_id: Int!,
                     $merchant_transaction_reference: String, $note: String,
                     $order_items: [OrderItemInput]!) {
  createOrder(account_id: $account_id, currency: $currency, merchant_id: $merchant_id,
              group_fulfilment: $group_fulfilment,
              auto_fulfil_group_fulfilment: $auto_fulfil_group_fulfilment, total: $total,
              sales_channel_id: $sales_channel_id,
              merchant_transaction_reference: $merchant_transaction_reference, note: $note,
              order_items: $order_items) {
    id
    LineItems {
      id
      Card {
        id card_reference pin balance expiry_time card_alias_card_reference product_name
      }
    }
  }
}"""

CREATE_BALANCE_ADJUSTMENT = """
mutation CreateBalanceAdjustment($currency: String!, $value: Int!, $merchant_id: Int!,
                                 $unit_epos_reference: String!, $card_reference: String!,
                                 $merchant_transaction_reference: String!) {
  createBalanceAdjustment(currency: $currency, value: $value, merchant_id: $merchant_id,
                          unit_epos_reference: $unit_epos_reference,
                          card_reference: $card_reference,
                          merchant_transaction_reference: $merchant_transaction_reference) {
    id value
    LineItem { id Card { card_reference balance } }
    ValueSplit { tender discount }
  }
}"""

CREATE_REVERSAL = """
mutation CreateReversal($merchant_transaction_reference: String!, $merchant_id: Int!,
                        $unit_epos_reference: String!, $ReversalItems: [ReversalItemInput]!) {
  createReversal(merchant_transaction_reference: $merchant_transaction_reference,
                 merchant_id: $merchant_id, unit_epos_reference: $unit_epos_reference,
                 ReversalItems: $ReversalItems) { id value }
}"""

ALL = {
    "Login": LOGIN,
    "Products": PRODUCTS,
    "Orders": ORDERS,
    "Cards": CARDS,
    "LineItems": LINE_ITEMS,
    "CreateOrder": CREATE_ORDER,
    "CreateBalanceAdjustment": CREATE_BALANCE_ADJUSTMENT,
    "CreateReversal": CREATE_REVERSAL,
}

LOGIN_COST = 1
CREATE_ORDER_COST = 20
ADJUSTMENT_COST = 10
REVERSAL_COST = 10


def query_cost(limit: int | None = None) -> int:
    """A query costs 1 plus 1 per 10 rows of its `limit` (a started ten counts)."""
    return 1 + (-(-limit // 10) if limit else 0)
