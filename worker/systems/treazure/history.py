"""A Treazure account's points history: read it, and find one of our bookings in it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import orjson

from worker.base.http import Rejected, Retryable
from worker.base.money import cents_from_json, utc_micros
from worker.base.times import utc_seconds_text
from worker.systems.treazure.session import SERVICE, TreazureSession, account_path


class Booking(NamedTuple):
    """A transaction as Treazure's history shows it: the balance after it, and when."""

    balance_cents: int
    mutated_us: int


async def read_history(
    session: TreazureSession, contact_id: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The account's history, oldest first (from `since` when given), as received."""
    params = {"from": utc_seconds_text(since)} if since is not None else None
    loyalty_id = session.settings.TREAZURE_LOYALTY_ID
    url = f"{account_path(contact_id)}/LoyaltyPrograms/{loyalty_id}/History"

    async def once() -> list[dict[str, Any]]:
        response = await session.authorized("GET", url, params=params)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise Retryable(SERVICE, "history answer is not JSON") from None
        if not isinstance(body, list):
            raise Rejected(SERVICE, "history answer is not a JSON array")
        return [entry for entry in body if isinstance(entry, dict)]

    return await session.with_retries(once)


def receipt_in(entries: list[dict[str, Any]], receipt_nr: str) -> Booking | None:
    """The booking of `receipt_nr` among history entries (the newest, were there two)."""
    for entry in reversed(entries):
        if entry.get("receiptNr") == receipt_nr:
            try:
                return Booking(cents_from_json(entry["balance"]),
                               utc_micros(datetime.fromisoformat(entry["dateTime"])))
            except (KeyError, TypeError, ValueError):
                raise Rejected(SERVICE, f"history entry {receipt_nr} is malformed") from None
    return None
