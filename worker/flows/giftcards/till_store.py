"""The till's moves on giftcard_adjustments (worker/store/giftcards.py), all through the
outbox: one row per redemption, top-up or reversal reference.

States: `received` (recorded, not yet known to be applied) → `applied` (Toggle holds it;
its ids and the card's balance after are kept) or `failed` (Toggle's refusal, verbatim).
The card number is kept in full because a row that must be sent again needs it; it is
shown masked everywhere (see till_outcomes.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.store.giftcards import AdjustmentRow, Adjustments, LeaseLost

__all__ = ["ADJUSTMENT", "APPLIED", "REVERSAL", "AdjustmentRow", "LeaseLost", "TillRows"]

ADJUSTMENT, REVERSAL = "adjust", "reverse"
RECEIVED, APPLIED = "received", "applied"


class TillRows(Adjustments):
    """giftcard_adjustments' queries plus the till's lease-checked moves."""

    def row(self, reference: str) -> AdjustmentRow:
        found = self.get(reference)
        assert found is not None, reference
        return found

    def claim(self, reference: str, lease_seconds: float) -> AdjustmentRow | None:
        return self.outbox.claim(reference, lease_seconds)

    def sending(self, reference: str, lease: datetime, lease_seconds: float) -> datetime:
        """A full lease from now, and the row marked uncertain, before the request leaves;
        returns the lease every later move gives."""
        lease = self.outbox.renew(reference, lease, lease_seconds)
        self.outbox.mark_uncertain(reference, lease)
        return lease

    def applied(self, reference: str, lease: datetime, *, line_item_id: int | None,
                balance_minor: int | None, adjustment_id: int | None = None,
                reversal_id: int | None = None, card_reference: str | None = None,
                value_minor: int | None = None) -> None:
        """Final: Toggle holds it (and the lease is let go)."""
        values: dict[str, Any] = {"line_item_id": line_item_id,
                                  "balance_after_minor": balance_minor}
        if adjustment_id is not None:
            values["adjustment_id"] = adjustment_id
        if reversal_id is not None:
            values["reversal_id"] = reversal_id
        # A reversal learns its card and value from Toggle.
        if card_reference is not None:
            values["card_reference"] = card_reference
        if value_minor is not None:
            values["value_minor"] = value_minor
        self.outbox.move(reference, lease, state=APPLIED, uncertain=False, reason=None,
                         lease_until=None, next_attempt_at=None, **values)

    def not_sent(self, reference: str, lease: datetime, reason: str) -> None:
        """Surely not applied (never left, or looked up and not found): clear `uncertain`."""
        self.outbox.move(reference, lease, uncertain=False, reason=reason[:2000])

    def fail(self, reference: str, reason: str, lease: datetime) -> None:
        self.outbox.fail(reference, reason, lease)

    def later(self, reference: str, lease: datetime, retry_in: float,
              reason: str | None = None) -> None:
        """Let go of the row, due again in `retry_in` seconds (the reason kept, if given)."""
        if reason is not None:
            self.outbox.move(reference, lease, reason=reason[:2000])
        self.outbox.release(reference, retry_in, lease)

    def lost(self, stale_seconds: float, limit: int = 1000) -> list[AdjustmentRow]:
        """Open rows whose worker is presumed gone (the sweep finishes them)."""
        return self.outbox.lost(RECEIVED, stale_seconds, limit)

    def applied_line_item(self, reference: str) -> int | None:
        """The line item an applied row of ours made, if we have one."""
        found = self.get(reference)
        if found is None or found.state != APPLIED:
            return None
        return found.line_item_id
