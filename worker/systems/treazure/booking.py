"""Point transactions on a Treazure account: a load or a redemption, sent exactly once."""

from __future__ import annotations

import orjson

from worker.base.money import exact_amount
from worker.systems.treazure.parsing import program_cents
from worker.systems.treazure.session import Caller, account_path

OPERATOR_ID = "pointsync"


async def book_points(
    treazure: Caller, contact_id: str, cents: int, comment: str, receipt_nr: str
) -> int | None:
    """Book `cents` (+ load, - redemption) once: ONE request, never repeated here.

    Returns the new balance in cents (None if the 2xx body does not say). Raises
    Retryable (surely not booked), Ambiguous (may be booked: read the history for
    `receipt_nr` before sending again) or Rejected (refused, e.g. 422 InsufficientBalance).
    """
    loyalty_id = treazure.settings.TREAZURE_LOYALTY_ID
    kind = "loads" if cents > 0 else "redemptions"
    body = {
        "loyaltyPrograms": [{"loyaltyPointDefinitionId": loyalty_id,
                             kind: [{"value": exact_amount(abs(cents))}]}],
        "context": {"comment": comment, "receiptNr": receipt_nr, "operatorId": OPERATOR_ID},
    }
    content = await treazure.call("POST", f"{account_path(contact_id)}/Transaction",
                                  body=orjson.dumps(body), write=True)
    try:
        return program_cents(orjson.loads(content), loyalty_id)
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError):
        return None  # booked for sure (2xx); the history says the balance
