"""Gift cards' tables, each an outbox (worker/store/outbox.py), and their queries.

- `giftcard_orders`: one Toggle order per reference (Toggle's merchant_transaction_reference):
  `received` → `issued`, or `failed` with Toggle's reason. The full card number is kept
  only here (shown on `giftcard show --reveal`); a PIN is never stored anywhere.
- `giftcard_redemptions`: the points → card saga, one row per caller's reference; its state
  is the step reached (see REDEMPTION_STEPS). The points move through the points ledger
  under `{reference}-points` (and back under `{reference}-refund`), the card through
  `giftcard_orders` under the reference itself.
- `giftcard_adjustments`: till operations (redeem, top up, reverse), one per reference.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, String, Table, Text

from worker.store.database import Store
from worker.store.engine import metadata, utcnow
from worker.store.outbox import LeaseLost, Outbox, outbox_columns

__all__ = ["ADJUSTMENT_OPEN", "ORDER_OPEN", "REDEMPTION_OPEN", "AdjustmentRow", "Adjustments",
           "LeaseLost", "OrderRow", "Orders", "RedemptionRow", "Redemptions",
           "giftcard_adjustments", "giftcard_orders", "giftcard_redemptions",
           "points_reference", "refund_reference"]

giftcard_orders = Table(
    "giftcard_orders", metadata,
    *outbox_columns("giftcard_orders", key="reference"),
    Column("value_minor", BigInteger, nullable=False),
    Column("email", String(254)),
    Column("message", Text),
    Column("note", Text),
    Column("source", String(16), nullable=False),
    Column("order_id", BigInteger),
    Column("line_item_id", BigInteger),
    Column("card_id", BigInteger),
    Column("card_reference", String(64)),  # in full: only `show --reveal` prints it
    Column("card_masked", String(64)),
    Column("issued_at", DateTime(timezone=True)),
)

giftcard_redemptions = Table(
    "giftcard_redemptions", metadata,
    *outbox_columns("giftcard_redemptions", key="reference"),
    Column("contact_id", String(64), nullable=False),
    Column("points_cents", BigInteger, nullable=False),
    Column("value_minor", BigInteger, nullable=False),
    Column("email", String(254)),
    Column("description", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("points_reference", String(64), nullable=False),
    Column("refund_reference", String(64), nullable=False),
    Column("order_reference", String(64), nullable=False),
    Column("order_id", BigInteger),
    Column("line_item_id", BigInteger),
    Column("card_masked", String(64)),
    Column("finished_at", DateTime(timezone=True)),
)

giftcard_adjustments = Table(
    "giftcard_adjustments", metadata,
    *outbox_columns("giftcard_adjustments", key="reference", key_length=80),
    Column("kind", String(16), nullable=False),  # adjust | reverse
    Column("card_reference", String(64)),
    Column("value_minor", BigInteger),
    Column("site", String(64), nullable=False),
    Column("site_reference", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("original_reference", String(80)),  # a reversal's adjustment
    Column("adjustment_id", BigInteger),
    Column("line_item_id", BigInteger),
    Column("reversal_id", BigInteger),
    Column("balance_after_minor", BigInteger),
)

ORDER_OPEN = ("received",)
# The saga's steps in order; `failed` and `refunded` end it early.
REDEMPTION_STEPS = ("points_pending", "points_taken", "card_pending", "card_issued", "done")
REDEMPTION_OPEN = ("points_pending", "points_taken", "card_pending", "card_issued",
                   "refund_pending")
ADJUSTMENT_OPEN = ("received",)


def points_reference(reference: str) -> str:
    return f"{reference}-points"


def refund_reference(reference: str) -> str:
    return f"{reference}-refund"


@dataclass(frozen=True)
class _Row:
    state: str
    reason: str | None
    attempts: int
    uncertain: bool
    lease_until: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OrderRow(_Row):
    reference: str
    value_minor: int
    email: str | None
    message: str | None
    note: str | None
    source: str
    order_id: int | None
    line_item_id: int | None
    card_id: int | None
    card_reference: str | None
    card_masked: str | None
    issued_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state not in ORDER_OPEN


@dataclass(frozen=True)
class RedemptionRow(_Row):
    reference: str
    contact_id: str
    points_cents: int
    value_minor: int
    email: str | None
    description: str
    source: str
    points_reference: str
    refund_reference: str
    order_reference: str
    order_id: int | None
    line_item_id: int | None
    card_masked: str | None
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state not in REDEMPTION_OPEN


@dataclass(frozen=True)
class AdjustmentRow(_Row):
    reference: str
    kind: str
    card_reference: str | None
    value_minor: int | None
    site: str
    site_reference: str
    source: str
    original_reference: str | None
    adjustment_id: int | None
    line_item_id: int | None
    reversal_id: int | None
    balance_after_minor: int | None

    @property
    def final(self) -> bool:
        return self.state not in ADJUSTMENT_OPEN


def _maker(cls: type[Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return lambda data: cls(**{k: v for k, v in data.items() if k in names})


def _new(values: dict[str, Any], state: str) -> dict[str, Any]:
    now = utcnow()
    return {**values, "state": state, "attempts": 0, "uncertain": False,
            "created_at": now, "updated_at": now}


class Orders:
    """Gift-card orders: the outbox (`.outbox`: claim, moves, sweep, replay) and the moves
    that are this table's own."""

    def __init__(self, store: Store) -> None:
        self.outbox: Outbox[OrderRow] = Outbox(
            store.engine, giftcard_orders, open_states=ORDER_OPEN,
            make_row=_maker(OrderRow), noun="gift-card order")

    def record(self, reference: str, value_minor: int, email: str | None,
               message: str | None, note: str | None, source: str) -> tuple[OrderRow, bool]:
        return self.outbox.insert_once(_new({
            "reference": reference, "value_minor": value_minor, "email": email,
            "message": message, "note": note, "source": source}, "received"))

    def get(self, reference: str) -> OrderRow | None:
        return self.outbox.get(reference)

    def issued(self, reference: str, lease: datetime | None, *, order_id: int | None,
               line_item_id: int | None, card_id: int | None, card_reference: str | None,
               card_masked: str | None) -> None:
        """Final: Toggle holds the order (and lets go of the lease)."""
        self.outbox.move(reference, lease, state="issued", uncertain=False, reason=None,
                         order_id=order_id, line_item_id=line_item_id, card_id=card_id,
                         card_reference=card_reference, card_masked=card_masked,
                         issued_at=utcnow(), lease_until=None, next_attempt_at=None)


class Redemptions:
    def __init__(self, store: Store) -> None:
        self.outbox: Outbox[RedemptionRow] = Outbox(
            store.engine, giftcard_redemptions, open_states=REDEMPTION_OPEN,
            make_row=_maker(RedemptionRow), noun="redemption")

    def record(self, reference: str, contact_id: str, points_cents: int, value_minor: int,
               email: str | None, description: str,
               source: str) -> tuple[RedemptionRow, bool]:
        return self.outbox.insert_once(_new({
            "reference": reference, "contact_id": contact_id, "points_cents": points_cents,
            "value_minor": value_minor, "email": email, "description": description,
            "source": source, "points_reference": points_reference(reference),
            "refund_reference": refund_reference(reference), "order_reference": reference,
        }, "points_pending"))

    def get(self, reference: str) -> RedemptionRow | None:
        return self.outbox.get(reference)

    def step(self, reference: str, lease: datetime, state: str, **values: Any) -> None:
        """Record the step reached (before the next one is taken); final steps let go."""
        if state not in REDEMPTION_OPEN:
            values.update(lease_until=None, next_attempt_at=None, finished_at=utcnow())
        self.outbox.move(reference, lease, state=state, **values)


class Adjustments:
    """Till operations (written by the till flow)."""

    def __init__(self, store: Store) -> None:
        self.outbox: Outbox[AdjustmentRow] = Outbox(
            store.engine, giftcard_adjustments, open_states=ADJUSTMENT_OPEN,
            make_row=_maker(AdjustmentRow), noun="gift-card adjustment")

    def record(self, reference: str, kind: str, card_reference: str | None,
               value_minor: int | None, site: str, site_reference: str, source: str,
               original_reference: str | None = None) -> tuple[AdjustmentRow, bool]:
        return self.outbox.insert_once(_new({
            "reference": reference, "kind": kind, "card_reference": card_reference,
            "value_minor": value_minor, "site": site, "site_reference": site_reference,
            "source": source, "original_reference": original_reference}, "received"))

    def get(self, reference: str) -> AdjustmentRow | None:
        return self.outbox.get(reference)
