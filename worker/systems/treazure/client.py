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
from worker.systems.treazure.aio import AioTreazure
from worker.systems.treazure.history import HistoryReader, read_history
from worker.systems.treazure.jobs import BalancesJobs, Page
from worker.systems.treazure.parsing import program_cents
from worker.systems.treazure.session import Caller, TreazureSession, account_path

# Connections kept for the booking rounds: as many as a round books at once.
POINTS_CONNECTIONS = 32


class PointCalls:
    """A point transaction's two calls, booking it and reading the history for it, on one
    transport (the session's httpx, or the rounds' aiohttp session)."""

    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def book_points(
        self, contact_id: str, cents: int, comment: str, receipt_nr: str
    ) -> int | None:
        """Book `cents` once (see booking.book_points: never repeated here)."""
        return await booking.book_points(self._caller, contact_id, cents, comment, receipt_nr)

    async def history(self, contact_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The account's history, oldest first (from `since` when given), as received."""
        return await read_history(self._caller, contact_id, since)


class TreazureClient(PointCalls):
    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None):
        self._session = TreazureSession(settings, redis, http)
        super().__init__(self._session)
        self._jobs = BalancesJobs(self._session)
        self._loyalty_id = settings.TREAZURE_LOYALTY_ID
        self.token = self._session.token
        self._rounds: AioTreazure | None = None

    async def aclose(self) -> None:
        try:
            await self._session.http.aclose()
        finally:
            if self._rounds is not None:
                await self._rounds.close()

    def round_calls(self) -> PointCalls:
        """The booking rounds' calls: one aiohttp session kept for this client's life (on
        its loop), its connections kept alive between rounds; aiohttp spends about an
        eighth of httpx's CPU per request (see aio.py)."""
        if self._rounds is None:
            self._rounds = AioTreazure(self._session, POINTS_CONNECTIONS)
        self._rounds.open()
        return PointCalls(self._rounds)

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

    def history_reader(self, concurrency: int) -> HistoryReader:
        """Many accounts' histories, at most `concurrency` connections (`async with` it)."""
        return HistoryReader(self._session, concurrency)
