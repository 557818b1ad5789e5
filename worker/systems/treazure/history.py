"""A Treazure account's points history: read it, one account at a time on the client's httpx
or many on one aiohttp session (a refresh's chunk), and find one of our bookings in it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import orjson

from worker.base.http import Rejected, Retryable
from worker.base.money import cents_from_json, utc_micros
from worker.base.times import utc_seconds_text
from worker.systems.treazure.aio import AioTreazure
from worker.systems.treazure.aio import env_proxy as env_proxy  # where it was first
from worker.systems.treazure.session import SERVICE, Caller, TreazureSession, account_path


class Booking(NamedTuple):
    """A transaction as Treazure's history shows it: the balance after it, and when."""

    balance_cents: int
    mutated_us: int


def history_path(contact_id: str, loyalty_id: str) -> str:
    return f"{account_path(contact_id)}/LoyaltyPrograms/{loyalty_id}/History"


def history_params(since: datetime | None) -> dict[str, str] | None:
    return {"from": utc_seconds_text(since)} if since is not None else None


def parse_history(content: bytes) -> list[dict[str, Any]]:
    """A 2xx History answer's entries: a garbled body (a proxy's page) is retried like a
    5xx; JSON that is not an array is refused."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise Retryable(SERVICE, "history answer is not JSON") from None
    if not isinstance(body, list):
        raise Rejected(SERVICE, "history answer is not a JSON array")
    return [entry for entry in body if isinstance(entry, dict)]


async def read_history(
    treazure: Caller, contact_id: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The account's history, oldest first (from `since` when given), as received; on the
    session's httpx or an aiohttp session (see aio.py)."""
    path = history_path(contact_id, treazure.settings.TREAZURE_LOYALTY_ID)
    params = history_params(since)

    async def once() -> list[dict[str, Any]]:
        return parse_history(await treazure.call("GET", path, params=params))

    return await treazure.with_retries(once)


class HistoryReader:
    """Many accounts' histories on one aiohttp session of at most `concurrency` kept-alive
    connections, for one refresh chunk (see aio.py: aiohttp spends about an eighth of
    httpx's CPU per request, and the request is most of a refresh's cost per contact)."""

    def __init__(self, session: TreazureSession, concurrency: int) -> None:
        self._aio = AioTreazure(session, concurrency)

    async def __aenter__(self) -> HistoryReader:
        self._aio.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._aio.close()

    async def read(self, contact_id: str, since: datetime | None = None
                   ) -> list[dict[str, Any]]:
        """The account's history, oldest first (from `since` when given), as received."""
        return await read_history(self._aio, contact_id, since)


def entry_booking(entry: dict[str, Any]) -> Booking:
    """An entry's balance after it and its time; KeyError, TypeError or ValueError when
    the entry does not carry them readably."""
    return Booking(cents_from_json(entry["balance"]),
                   utc_micros(datetime.fromisoformat(entry["dateTime"])))


def receipt_in(entries: list[dict[str, Any]], receipt_nr: str) -> Booking | None:
    """The booking of `receipt_nr` among history entries (the newest, were there two)."""
    for entry in reversed(entries):
        if entry.get("receiptNr") == receipt_nr:
            try:
                return entry_booking(entry)
            except (KeyError, TypeError, ValueError):
                raise Rejected(SERVICE, f"history entry {receipt_nr} is malformed") from None
    return None
