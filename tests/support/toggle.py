"""Helpers for tests against the Toggle simulator: an in-process server with a hand-driven
clock, the contract's GraphQL documents, and a client that logs in and keeps the token."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sims.toggle.config import ToggleConfig
from sims.toggle.server import PATH, toggle_app
from sims.toggle.state import ToggleState

USERNAME, PASSWORD, ACCOUNT = "sim-toggle", "sim-toggle-secret", 1001
SITE = "EPOS-LDN-1"
CARD, CARD_PIN, CARD_BALANCE = "6301190000000010001", "1234", 5000
ALIAS, ALIAS_CARD = "4000123412341234", "6301190000000010003"

LOGIN = """query Login($username: String!, $password: String!) {
  loginUser(username: $username, password: $password) { id } }"""
PRODUCTS = "query Products($account_id: Int!) { Products(account_id: $account_id) { id name } }"
CREATE_ORDER = """mutation Issue($account_id: Int!, $currency: String!, $merchant_id: Int!,
  $group_fulfilment: Boolean!, $auto_fulfil_group_fulfilment: Boolean!, $total: Int!,
  $sales_channel_id: Int!, $merchant_transaction_reference: String, $note: String,
  $order_items: [OrderItemInput]!) {
  createOrder(account_id: $account_id, currency: $currency, merchant_id: $merchant_id,
    group_fulfilment: $group_fulfilment,
    auto_fulfil_group_fulfilment: $auto_fulfil_group_fulfilment,
    total: $total, sales_channel_id: $sales_channel_id,
    merchant_transaction_reference: $merchant_transaction_reference, note: $note,
    order_items: $order_items) {
    id LineItems { id Card { id card_reference pin balance expiry_time
      card_alias_card_reference product_name } } } }"""
ORDERS = """query Orders($merchant_transaction_reference: String, $created_at_from: String,
  $created_at_to: String, $page: Int, $limit: Int) {
  Orders(merchant_transaction_reference: $merchant_transaction_reference,
    created_at_from: $created_at_from, created_at_to: $created_at_to, page: $page,
    limit: $limit) {
    data { id created_at merchant_transaction_reference value
      LineItems { id value Card { id card_reference balance } } }
    total per_page current_page } }"""
CARDS = """query Balance($card_reference: String!) { Cards(card_reference: $card_reference) {
  data { id card_reference balance initial_balance expiry_time card_alias_card_reference
    product_name } total } }"""
ADJUST = """mutation Adjust($currency: String!, $value: Int!, $merchant_id: Int!,
  $unit_epos_reference: String!, $card_reference: String!,
  $merchant_transaction_reference: String!) {
  createBalanceAdjustment(currency: $currency, value: $value, merchant_id: $merchant_id,
    unit_epos_reference: $unit_epos_reference, card_reference: $card_reference,
    merchant_transaction_reference: $merchant_transaction_reference) {
    id value LineItem { id Card { card_reference balance } } ValueSplit { tender discount } } }"""
LINE_ITEMS = """query Made($merchant_transaction_reference: String!) {
  LineItems(merchant_transaction_reference: $merchant_transaction_reference) {
    data { id value Card { card_reference balance } } } }"""
REVERSE = """mutation Reverse($merchant_transaction_reference: String!, $merchant_id: Int!,
  $unit_epos_reference: String!, $ReversalItems: [ReversalItemInput]!) {
  createReversal(merchant_transaction_reference: $merchant_transaction_reference,
    merchant_id: $merchant_id, unit_epos_reference: $unit_epos_reference,
    ReversalItems: $ReversalItems) { id value } }"""


def order_variables(value: int, reference: str | None, email: str | None = None,
                    **item: Any) -> dict[str, Any]:
    """A free-of-charge gratuity card, as the worker issues it (emailed when `email`)."""
    line = {"product_id": 1, "custom_price_modifier_value": value,
            "fulfilment_method_id": 1 if email else 3, "generate_card_reference": True,
            "fulfilment_email": email, "discounts": [{"discount_type_id": 1, "value": value}],
            **item}
    return {"account_id": ACCOUNT, "currency": "GBP", "merchant_id": 26,
            "group_fulfilment": False, "auto_fulfil_group_fulfilment": False, "total": 0,
            "sales_channel_id": 7, "merchant_transaction_reference": reference,
            "order_items": [line]}


def adjust_variables(value: int, reference: str, card: str = CARD,
                     site: str = SITE) -> dict[str, Any]:
    return {"currency": "GBP", "value": value, "merchant_id": 26, "unit_epos_reference": site,
            "card_reference": card, "merchant_transaction_reference": reference}


class Clock:
    """Time the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Toggle:
    """An HTTP client of the simulator that logs in once and follows X-Authorization."""

    def __init__(self, client: TestClient, state: ToggleState, clock: Clock) -> None:
        self.http, self.state, self.clock = client, state, clock
        self.token: str | None = None

    async def post(self, query: str, variables: dict[str, Any] | None = None,
                   token: str | None = None) -> tuple[int, dict[str, Any], Any]:
        """(status, body, headers) of one GraphQL call, with the kept token unless given."""
        use = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {use}"} if use else {}
        response = await self.http.post(PATH, json={"query": query, "variables": variables or {}},
                                        headers=headers)
        return response.status, await response.json(), response.headers

    async def login(self) -> str:
        status, body, headers = await self.post(
            LOGIN, {"username": USERNAME, "password": PASSWORD}, token="")
        assert status == 200 and body["data"]["loginUser"] == {"id": 17}, body
        self.token = headers["X-Authorization"].removeprefix("Bearer ")
        return self.token

    async def call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        status, body, headers = await self.post(query, variables)
        assert status == 200, body
        if "X-Authorization" in headers:
            self.token = headers["X-Authorization"].removeprefix("Bearer ")
        return body

    async def control(self, method: str, path: str, **body: Any) -> Any:
        response = await self.http.request(method, path, json=body if body else None)
        assert response.status == 200, await response.text()
        return await response.json()


@asynccontextmanager
async def toggle_sim(**config: Any) -> AsyncIterator[Toggle]:
    """The Toggle simulator served in-process on a free port, logged in."""
    clock = Clock()
    state = ToggleState(ToggleConfig().updated(config), clock=clock)
    client = TestClient(TestServer(toggle_app(state)))
    await client.start_server()
    try:
        toggle = Toggle(client, state, clock)
        await toggle.login()
        yield toggle
    finally:
        await client.close()
