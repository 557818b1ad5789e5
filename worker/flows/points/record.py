"""A point transaction's ledger row: recorded first (the database is the truth), and the
outcome a call reports about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from worker.base.arguments import InvalidArgument
from worker.base.money import cents_to_decimal
from worker.base.point_request import PointRequest
from worker.store.database import Store
from worker.store.ledger import Ledger, LedgerRow

# A task queues itself again for a pause up to this long (far below the broker's visibility
# timeout, so the delayed message is never handed out twice); a longer one is the sweep's.
REQUEUE_MAX_SECONDS = 60.0


@dataclass
class Outcome:
    reference: str
    state: str
    contact_id: str
    amount: str | None
    balance: str | None
    reason: str | None
    attempts: int
    duplicate: bool = False
    in_progress: bool = False
    # Seconds until the row, let go unfinished by this call, is due again (None: finished,
    # or not ours); the task queues itself for then when that is soon (REQUEUE_MAX_SECONDS).
    retry_in: float | None = None

    @classmethod
    def of(cls, row: LedgerRow, *, retry_in: float | None = None, **flags: bool) -> Outcome:
        return cls(
            reference=row.reference, state=row.state, contact_id=row.contact_id,
            amount=decimal_text(row.amount_cents), balance=decimal_text(row.balance_cents),
            reason=row.reason, attempts=row.attempts, retry_in=retry_in, **flags,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(
    store: Store, request: PointRequest, source: str, *, expect_new: bool = False
) -> tuple[LedgerRow, bool]:
    """The ledger row for the request (created, or the one its reference already has).

    `expect_new` (the webhook's case) tries the insert first; otherwise (a task, usually
    for a row the web process recorded) a read comes first.
    """
    ledger = Ledger(store)
    known = None if expect_new else ledger.get(request.reference)
    row, created = (known, False) if known is not None else ledger.record(request, source)
    if not created and not row.same_request(request):
        raise InvalidArgument(
            f"reference: {request.reference!r} is already used for a different transaction "
            f"(contact {row.contact_id}, amount {decimal_text(row.amount_cents)})")
    return row, created


def decimal_text(cents: int | None) -> str | None:
    return None if cents is None else str(cents_to_decimal(cents))


def booking_arguments(row: LedgerRow) -> dict[str, str]:
    """The `pointsync.add_points` arguments that continue a recorded transaction (no secret
    in them), for every sender: the sweep, the web process's resender, the CLI."""
    if row.amount_cents is None or row.description is None:
        raise ValueError(f"transaction {row.reference} was recorded as invalid: never sent")
    return {"contact_id": row.contact_id, "amount": str(cents_to_decimal(row.amount_cents)),
            "description": row.description, "reference": row.reference}
