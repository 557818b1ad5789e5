"""What the till's operations answer: JSON-safe, card numbers masked, amounts as "10.00"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.flows.giftcards.till_store import ADJUSTMENT, AdjustmentRow
from worker.systems.toggle.cards import format_minor, mask_card_number
from worker.systems.toggle.results import Card


def _amount(minor: int | None) -> str | None:
    return None if minor is None else format_minor(minor)


@dataclass(frozen=True)
class BalanceOutcome:
    """A card's balance (`state` ok) or why there is none (`unknown`, with the reason)."""

    card_reference: str
    state: str
    card: Card | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"state": self.state,
                                 "card_number": mask_card_number(self.card_reference)}
        if self.card is not None:
            shown.update(self.card.public())
        if self.reason is not None:
            shown["reason"] = self.reason
        return shown


@dataclass(frozen=True)
class AdjustOutcome:
    """One redemption, top-up or reversal: `applied`, `failed` (reason: Toggle's words) or
    `received` (not settled yet: `retry_in` seconds, or another worker holds it)."""

    row: AdjustmentRow
    duplicate: bool = False
    in_progress: bool = False
    retry_in: float | None = None

    @property
    def reference(self) -> str:
        return self.row.reference

    @property
    def state(self) -> str:
        return self.row.state

    @property
    def operation(self) -> str:
        if self.row.kind != ADJUSTMENT:
            return "reversal"
        return "top-up" if (self.row.value_minor or 0) > 0 else "redemption"

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        shown: dict[str, Any] = {
            "reference": row.reference,
            "operation": self.operation,
            "state": row.state,
            "card_number": mask_card_number(row.card_reference) or None,
            "value": _amount(row.value_minor),
            "balance": _amount(row.balance_after_minor),
            "site": row.site,
            "adjustment_id": row.adjustment_id,
            "reversal_id": row.reversal_id,
            "line_item_id": row.line_item_id,
            "reason": row.reason,
            "duplicate": self.duplicate,
        }
        if row.original_reference is not None:
            shown["original_reference"] = row.original_reference
        if self.in_progress:
            shown["in_progress"] = True
        if self.retry_in is not None:
            shown["retry_in"] = self.retry_in
        return shown
