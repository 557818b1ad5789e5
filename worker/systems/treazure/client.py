"""Treazure (the point master) client: the one object the flows hold.

It composes the package's pieces: the shared token and retries (session, token), the
balances job (jobs), answers read into our types (parsing), point transactions (booking)
and the history (history). Every contract assumption about Treazure lives in this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis

from worker.base.http import Rejected
from worker.base.money import cents_to_decimal
from worker.base.settings import Settings
from worker.systems.treazure import booking
from worker.systems.treazure.history import HistoryReader, read_history
from worker.systems.treazure.jobs import BalancesJobs, Page
from worker.systems.treazure.parsing import program_cents
from worker.systems.treazure.session import TreazureSession, account_path


class TreazureClient:
    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None):
        self._session = TreazureSession(settings, redis, http)
        self._jobs = BalancesJobs(self._session)
        self._loyalty_id = settings.TREAZURE_LOYALTY_ID
        self.token = self._session.token

    async def aclose(self) -> None:
        await self._session.http.aclose()

    async def __aenter__(self) -> TreazureClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request_token(self) -> float:
        """Ask Treazure for a new token (not the shared one): the credentials' check.
        Returns the seconds it is valid for."""
        return (await self._session.request_token())[1]

    async def start_balances_job(self, mutated_from: datetime, mutated_to: datetime) -> str:
        return await self._jobs.start(mutated_from, mutated_to)

    def balance_pages(self, mutated_from: datetime, mutated_to: datetime) -> AsyncIterator[Page]:
        """Stream the balances job's pages, one parsed page at a time (see BalancesJobs)."""
        return self._jobs.pages(mutated_from, mutated_to)

    async def get_balance(self, contact_id: str) -> Decimal | None:
        """The account's current balance in our loyalty program; None if unknown."""
        try:
            account = await self._session.read_json("GET", account_path(contact_id))
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        cents = program_cents(account, self._loyalty_id)
        return None if cents is None else cents_to_decimal(cents)

    async def book_points(
        self, contact_id: str, cents: int, comment: str, receipt_nr: str
    ) -> int | None:
        """Book `cents` once (see booking.book_points: never repeated here)."""
        return await booking.book_points(self._session, contact_id, cents, comment, receipt_nr)

    async def history(self, contact_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The account's history, oldest first (from `since` when given), as received."""
        return await read_history(self._session, contact_id, since)

    def history_reader(self, concurrency: int) -> HistoryReader:
        """Many accounts' histories, at most `concurrency` connections (`async with` it)."""
        return HistoryReader(self._session, concurrency)
