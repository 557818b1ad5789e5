"""Toggle (gift cards) client: the one object the flows hold.

It composes the package's pieces: the session (shared token, shared credit bucket, error
classes, retries), the documents and the answers read into results. Every contract
assumption about Toggle lives in this package.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from redis.asyncio import Redis

from worker.base.http import Rejected
from worker.base.settings import Settings
from worker.systems.toggle import documents as doc
from worker.systems.toggle.errors import SERVICE
from worker.systems.toggle.results import (
    Adjustment,
    Card,
    LineItem,
    Order,
    OrdersPage,
    Product,
    Reversal,
    read_adjustment,
    read_card,
    read_line_item,
    read_order,
)
from worker.systems.toggle.session import ToggleSession

IN_STORE_GIFT = "In-store Gift"
SALES_CHANNEL_GUEST_GRATUITY = 7
FULFIL_BY_EMAIL = 1
FULFIL_IN_VENUE = 3
DISCOUNT_FREE_OF_CHARGE = 1
MAX_LIMIT = 100
REVERSAL_SUFFIX = "-REVERSAL"


def reversal_reference(original: str) -> str:
    return f"{original}{REVERSAL_SUFFIX}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class ToggleClient:
    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None,
                 *, session: ToggleSession | None = None) -> None:
        self._session = session or ToggleSession(settings, redis, http)
        self.settings = settings
        self.token = self._session.token
        self.bucket = self._session.bucket
        self._product_id = settings.TOGGLE_PRODUCT_ID

    async def aclose(self) -> None:
        await self._session.http.aclose()

    async def __aenter__(self) -> ToggleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def _account_id(self) -> int:
        assert self.settings.TOGGLE_ACCOUNT_ID is not None  # the session checked
        return self.settings.TOGGLE_ACCOUNT_ID

    async def login(self) -> str:
        """Log in now (doctor's check) and share the new token."""
        token = await self._session.login()
        await self.token.switch(token)
        return token

    async def products(self) -> list[Product]:
        data = await self._session.query(doc.PRODUCTS, {"account_id": self._account_id},
                                         cost=doc.query_cost())
        return [Product(int(p["id"]), str(p["name"])) for p in data.get("Products") or ()]

    async def in_store_gift_product_id(self) -> int:
        """TOGGLE_PRODUCT_ID, else the account's `In-store Gift` (looked up once)."""
        if self._product_id is None:
            for product in await self.products():
                if product.name == IN_STORE_GIFT:
                    self._product_id = product.id
                    break
            else:
                raise Rejected(SERVICE, f"the account has no {IN_STORE_GIFT!r} product "
                                        "(set TOGGLE_PRODUCT_ID)")
        return self._product_id

    async def create_order(self, value_minor: int, reference: str, *, email: str | None = None,
                           message: str | None = None, note: str | None = None) -> Order:
        """Issue one gift card worth `value_minor`, free to the guest: emailed by Toggle
        when `email` is given, else in venue (the card and PIN come back here only)."""
        if value_minor <= 0:
            raise ValueError("value_minor must be positive")
        s = self.settings
        item = {
            "product_id": await self.in_store_gift_product_id(),
            "custom_price_modifier_value": value_minor,
            "fulfilment_method_id": FULFIL_BY_EMAIL if email else FULFIL_IN_VENUE,
            "generate_card_reference": True,
            "fulfilment_email": email,
            "message": message,
            "discounts": [{"discount_type_id": DISCOUNT_FREE_OF_CHARGE, "value": value_minor}],
        }
        variables: dict[str, Any] = {
            "account_id": self._account_id,
            "currency": s.TOGGLE_CURRENCY,
            "merchant_id": s.TOGGLE_MERCHANT_ID,
            # One card, fulfilled as the item says [assumed: no group fulfilment].
            "group_fulfilment": False,
            "auto_fulfil_group_fulfilment": False,
            "total": 0,
            "sales_channel_id": SALES_CHANNEL_GUEST_GRATUITY,
            "merchant_transaction_reference": reference,
            "note": note,
            "order_items": [item],
        }
        data = await self._session.mutate(doc.CREATE_ORDER, variables,
                                          cost=doc.CREATE_ORDER_COST, reference=reference)
        return read_order(data["createOrder"])

    async def card_balance(self, card_reference: str) -> Card | None:
        """The card (found by its number or its alias); None when Toggle knows none."""
        data = await self._session.query(doc.CARDS, {"card_reference": card_reference},
                                         cost=doc.query_cost())
        cards = (data.get("Cards") or {}).get("data") or []
        return read_card(cards[0]) if cards else None

    async def adjust(self, card_reference: str, value_minor: int, site_reference: str,
                     reference: str) -> Adjustment:
        """Redeem (negative) or top up (positive) once under `reference` at a site."""
        if value_minor == 0:
            raise ValueError("value_minor must not be zero")
        s = self.settings
        variables = {
            "currency": s.TOGGLE_CURRENCY, "value": value_minor,
            "merchant_id": s.TOGGLE_MERCHANT_ID, "unit_epos_reference": site_reference,
            "card_reference": card_reference, "merchant_transaction_reference": reference,
        }
        data = await self._session.mutate(doc.CREATE_BALANCE_ADJUSTMENT, variables,
                                          cost=doc.ADJUSTMENT_COST, reference=reference)
        return read_adjustment(data["createBalanceAdjustment"])

    async def reverse(self, original_reference: str, line_item_id: int,
                      site_reference: str) -> Reversal:
        """Refund the whole line item `original_reference` made, under `{original}-REVERSAL`."""
        reference = reversal_reference(original_reference)
        variables = {
            "merchant_transaction_reference": reference,
            "merchant_id": self.settings.TOGGLE_MERCHANT_ID,
            "unit_epos_reference": site_reference,
            "ReversalItems": [{"line_item_id": line_item_id, "shipping_refund": False}],
        }
        data = await self._session.mutate(doc.CREATE_REVERSAL, variables,
                                          cost=doc.REVERSAL_COST, reference=reference)
        raw = data["createReversal"]
        return Reversal(int(raw["id"]), int(raw["value"]))

    async def line_items_for(self, reference: str) -> list[LineItem]:
        """What `reference` created (empty when nothing): how a lost answer is resolved."""
        data = await self._session.query(
            doc.LINE_ITEMS, {"merchant_transaction_reference": reference},
            cost=doc.query_cost())
        return [read_line_item(i) for i in (data.get("LineItems") or {}).get("data") or ()]

    async def orders(self, created_from: datetime | None = None,
                     created_to: datetime | None = None, page: int = 1, limit: int = MAX_LIMIT,
                     *, reference: str | None = None) -> OrdersPage:
        """One page of orders, oldest first: by creation time (backfills) or by reference."""
        if not 1 <= limit <= MAX_LIMIT or page < 1:
            raise ValueError(f"page ≥ 1 and 1 ≤ limit ≤ {MAX_LIMIT}")
        variables = {
            "merchant_transaction_reference": reference,
            "created_at_from": _iso(created_from), "created_at_to": _iso(created_to),
            "page": page, "limit": limit,
        }
        data = await self._session.query(doc.ORDERS, variables, cost=doc.query_cost(limit))
        raw = data.get("Orders") or {}
        return OrdersPage(
            orders=tuple(read_order(o) for o in raw.get("data") or ()),
            total=int(raw.get("total") or 0),
            per_page=int(raw.get("per_page") or limit),
            current_page=int(raw.get("current_page") or page),
        )

    async def credits(self) -> float:
        """Credits the shared bucket holds now (doctor, /metrics)."""
        return await self.bucket.available()
