"""What a gift-card call reports: JSON-safe (`as_dict()`: task results, the web API, Flower),
values as "10.00", card numbers masked, and never a PIN."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from worker.store.giftcards import OrderRow, RedemptionRow
from worker.systems.toggle.cards import format_minor


@dataclass
class CardOutcome:
    reference: str
    state: str  # received (not issued yet) | issued | failed
    value: str
    card_number: str | None  # masked
    order_id: int | None
    line_item_id: int | None
    reason: str | None
    attempts: int
    duplicate: bool = False
    in_progress: bool = False
    retry_in: float | None = None  # let go unfinished: due again in this many seconds
    # Only the call that issued an in-venue card has it; never in as_dict() or a repr.
    pin: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, row: OrderRow, *, pin: str | None = None, retry_in: float | None = None,
           **flags: bool) -> CardOutcome:
        return cls(reference=row.reference, state=row.state,
                   value=format_minor(row.value_minor), card_number=row.card_masked,
                   order_id=row.order_id, line_item_id=row.line_item_id, reason=row.reason,
                   attempts=row.attempts, retry_in=retry_in, pin=pin, **flags)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["pin"]
        return data


@dataclass
class RedeemOutcome:
    reference: str
    # points_pending | points_taken | card_pending | card_issued | done | refund_pending |
    # refunded | failed
    state: str
    contact_id: str
    points: str
    value: str
    card_number: str | None  # masked
    order_id: int | None
    line_item_id: int | None
    reason: str | None
    points_reference: str
    refund_reference: str
    points_state: str | None  # the points ledger row's: booked, then applied (in Engage)
    duplicate: bool = False
    in_progress: bool = False
    retry_in: float | None = None

    @classmethod
    def of(cls, row: RedemptionRow, *, points_state: str | None,
           retry_in: float | None = None, **flags: bool) -> RedeemOutcome:
        return cls(reference=row.reference, state=row.state, contact_id=row.contact_id,
                   points=format_minor(row.points_cents), value=format_minor(row.value_minor),
                   card_number=row.card_masked, order_id=row.order_id,
                   line_item_id=row.line_item_id, reason=row.reason,
                   points_reference=row.points_reference,
                   refund_reference=row.refund_reference, points_state=points_state,
                   retry_in=retry_in, **flags)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
