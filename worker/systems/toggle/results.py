"""Toggle's answers as our types. A card's PIN lives only in the IssuedCard the caller of
create_order gets: its repr hides the PIN and masks the number, and `public()` is what
may go into logs, task results and the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.systems.toggle.cards import format_minor, mask_card_number


@dataclass(frozen=True)
class Product:
    id: int
    name: str


@dataclass(frozen=True, repr=False)
class Card:
    """A card as Cards (balance) or createOrder describes it; amounts in minor units."""

    id: int | None
    card_reference: str
    balance_minor: int | None
    initial_balance_minor: int | None = None
    expiry_time: str | None = None
    alias: str | None = None
    product_name: str | None = None
    pin: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return (f"Card(id={self.id!r}, card_reference={self.masked!r}, "
                f"balance_minor={self.balance_minor!r}, pin={'***' if self.pin else None})")

    __str__ = __repr__

    @property
    def masked(self) -> str:
        return mask_card_number(self.card_reference)

    def public(self) -> dict[str, Any]:
        """Safe to log and keep: masked numbers, no PIN, amounts as "10.00"."""
        return {
            "card_id": self.id,
            "card_number": self.masked,
            "alias": mask_card_number(self.alias) if self.alias else None,
            "balance": None if self.balance_minor is None else format_minor(self.balance_minor),
            "initial_balance": None if self.initial_balance_minor is None
            else format_minor(self.initial_balance_minor),
            "expiry_time": self.expiry_time,
            "product_name": self.product_name,
        }


@dataclass(frozen=True)
class LineItem:
    id: int
    value_minor: int | None
    card: Card | None


@dataclass(frozen=True)
class Order:
    """An order: what createOrder answered (cards with PINs) or Orders listed (without)."""

    id: int
    line_items: tuple[LineItem, ...]
    reference: str | None = None
    created_at: str | None = None
    value_minor: int | None = None

    @property
    def card(self) -> Card | None:
        """The card of a one-card order (a gift card)."""
        for item in self.line_items:
            if item.card is not None:
                return item.card
        return None


@dataclass(frozen=True)
class OrdersPage:
    orders: tuple[Order, ...]
    total: int
    per_page: int
    current_page: int


@dataclass(frozen=True, repr=False)
class Adjustment:
    """A redemption (negative) or top-up (positive) as createBalanceAdjustment answered."""

    id: int
    value_minor: int
    line_item_id: int | None
    card_reference: str | None
    balance_minor: int | None
    tender_minor: int | None = None
    discount_minor: int | None = None

    def __repr__(self) -> str:
        return (f"Adjustment(id={self.id!r}, value_minor={self.value_minor!r}, "
                f"line_item_id={self.line_item_id!r}, "
                f"card_reference={mask_card_number(self.card_reference)!r}, "
                f"balance_minor={self.balance_minor!r})")

    __str__ = __repr__


@dataclass(frozen=True)
class Reversal:
    id: int
    value_minor: int


# -- reading answers ---------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def read_card(raw: Any) -> Card | None:
    if not isinstance(raw, dict) or raw.get("card_reference") is None:
        return None
    pin = raw.get("pin")
    return Card(
        id=_int(raw.get("id")),
        card_reference=str(raw["card_reference"]),
        balance_minor=_int(raw.get("balance")),
        initial_balance_minor=_int(raw.get("initial_balance")),
        expiry_time=raw.get("expiry_time"),
        alias=raw.get("card_alias_card_reference"),
        product_name=raw.get("product_name"),
        pin=None if pin is None else str(pin),
    )


def read_line_item(raw: dict[str, Any]) -> LineItem:
    return LineItem(id=int(raw["id"]), value_minor=_int(raw.get("value")),
                    card=read_card(raw.get("Card")))


def read_order(raw: dict[str, Any]) -> Order:
    return Order(
        id=int(raw["id"]),
        line_items=tuple(read_line_item(i) for i in raw.get("LineItems") or ()),
        reference=raw.get("merchant_transaction_reference"),
        created_at=raw.get("created_at"),
        value_minor=_int(raw.get("value")),
    )


def read_adjustment(raw: dict[str, Any]) -> Adjustment:
    item = raw.get("LineItem") or {}
    card = item.get("Card") or {}
    split = raw.get("ValueSplit") or {}
    return Adjustment(
        id=int(raw["id"]), value_minor=int(raw["value"]), line_item_id=_int(item.get("id")),
        card_reference=card.get("card_reference"), balance_minor=_int(card.get("balance")),
        tender_minor=_int(split.get("tender")), discount_minor=_int(split.get("discount")),
    )
