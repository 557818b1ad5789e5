"""The schema the contract declares, as SDL, with the simulator's resolvers bound to it."""

from typing import Any

from graphql import GraphQLObjectType, GraphQLSchema, build_schema

from sims.toggle import mutations, queries

SDL = """
type Query {
  loginUser(username: String!, password: String!): User
  Products(account_id: Int!): [Product]
  Orders(merchant_transaction_reference: String, created_at_from: String,
         created_at_to: String, page: Int, limit: Int): OrderPage
  Cards(card_reference: String!): CardPage
  LineItems(merchant_transaction_reference: String!): LineItemPage
}

type Mutation {
  createOrder(account_id: Int!, currency: String!, merchant_id: Int!, group_fulfilment: Boolean!,
              auto_fulfil_group_fulfilment: Boolean!, total: Int!, sales_channel_id: Int!,
              merchant_transaction_reference: String, note: String,
              order_items: [OrderItemInput]!): Order
  createBalanceAdjustment(currency: String!, value: Int!, merchant_id: Int!,
                          unit_epos_reference: String!, card_reference: String!,
                          merchant_transaction_reference: String!): BalanceAdjustment
  createReversal(merchant_transaction_reference: String!, merchant_id: Int!,
                 unit_epos_reference: String!, ReversalItems: [ReversalItemInput]!): Reversal
}

input OrderItemInput {
  product_id: Int
  custom_price_modifier_value: Int
  fulfilment_method_id: Int
  generate_card_reference: Boolean
  fulfilment_email: String
  message: String
  discounts: [DiscountInput]
}

input DiscountInput { discount_type_id: Int!, value: Int! }

input ReversalItemInput { line_item_id: Int!, shipping_refund: Boolean }

type User { id: Int! }
type Product { id: Int!, name: String! }

type Card {
  id: Int!
  card_reference: String!
  pin: String
  balance: Int!
  initial_balance: Int!
  expiry_time: String
  card_alias_card_reference: String
  product_name: String
}

type LineItem { id: Int!, value: Int!, Card: Card }

type Order {
  id: Int!
  created_at: String!
  merchant_transaction_reference: String
  value: Int!
  total: Int!
  LineItems: [LineItem]
}

type OrderPage { data: [Order], total: Int!, per_page: Int!, current_page: Int! }
type CardPage { data: [Card], total: Int! }
type LineItemPage { data: [LineItem], total: Int! }
type ValueSplit { tender: Int!, discount: Int! }
type BalanceAdjustment { id: Int!, value: Int!, LineItem: LineItem, ValueSplit: ValueSplit }
type Reversal { id: Int!, value: Int! }
"""

_RESOLVERS: dict[str, dict[str, Any]] = {
    "Query": queries.RESOLVERS,
    "Mutation": mutations.RESOLVERS,
}


def toggle_schema() -> GraphQLSchema:
    schema = build_schema(SDL)
    for type_name, resolvers in _RESOLVERS.items():
        root = schema.get_type(type_name)
        assert isinstance(root, GraphQLObjectType)
        for name, resolve in resolvers.items():
            root.fields[name].resolve = resolve
    return schema


SCHEMA = toggle_schema()
