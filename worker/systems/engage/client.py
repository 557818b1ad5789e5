"""Engage (the point follower) client: balance pushes and point-account reads.

Every request first takes a slot of the rate limit that all worker processes share, so
the whole deployment stays under ENGAGE_RATE_LIMIT requests per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import httpx
import msgspec
import orjson

from worker.base.http import Rejected, make_client, send, with_retries
from worker.base.money import cents_from_json, cents_to_decimal
from worker.base.ratelimit import SlotLimiter
from worker.base.settings import Settings

SERVICE = "engage"
MAX_BATCH = 1000


class BalanceRow(Protocol):
    """What a push needs of a balance (treazure.BalanceEntry is one)."""

    @property
    def contact_id(self) -> str: ...
    @property
    def amount(self) -> Decimal | float | int: ...
    @property
    def mutated_at(self) -> datetime | str: ...


class Balance(NamedTuple):
    contact_id: str
    amount: Decimal
    mutated_at: datetime | str


class PushResult(NamedTuple):
    transaction_id: str | None
    # contact id → Engage's reason; these rows were not applied.
    not_accepted: dict[str, str]


class _PushRow(msgspec.Struct, rename="camel"):
    contact_id: str
    amount: Decimal | float | int  # exact for output: see money.exact_amount
    definition_id: int
    time_stamp: datetime | str


# Decimals are written as JSON numbers with their exact text (1250.5, -0.05), never
# through a binary float; datetimes as RFC 3339 in UTC.
_encode = msgspec.json.Encoder(decimal_format="number").encode


class EngageClient:
    def __init__(
        self,
        settings: Settings,
        limiter: SlotLimiter,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self._definition_id = settings.ENGAGE_DEFINITION_ID
        self._prefix = f"/api/{settings.ENGAGE_API_VERSION}/point-accounts"
        # Sent on every request, also through a client handed in (tests, shared pools).
        self._headers = {
            "apikey": settings.ENGAGE_API_KEY.get_secret_value(),
            "User-Agent": settings.USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._http = http or make_client(
            str(settings.ENGAGE_BASE_URL),
            timeout=settings.HTTP_TIMEOUT_SECONDS,
            connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS,
            max_connections=max(8, settings.ENGAGE_PUSH_CONCURRENCY * 2),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EngageClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_for_slot(self) -> None:
        """Wait for a slot of the shared rate limit, to be spent by the next call made with
        `slot_reserved=True`: a caller that gathers work while it waits (the points
        drainer) sends more in that one request."""
        await self._limiter.acquire()

    async def _call(
        self, method: str, url: str, *, slot_reserved: bool = False, **kwargs: Any
    ) -> httpx.Response:
        paid = slot_reserved

        async def once() -> httpx.Response:
            nonlocal paid
            if paid:
                paid = False  # only the first attempt: a retry waits for a slot of its own
            else:
                await self._limiter.acquire()
            request = self._http.build_request(method, url, headers=self._headers, **kwargs)
            # A balance push is a plain overwrite: repeating the same one is harmless,
            # so every failure that may be transient is retried like a read.
            return await send(self._http, SERVICE, request)

        s = self._settings
        return await with_retries(
            once, attempts=s.HTTP_MAX_ATTEMPTS, max_backoff=s.HTTP_MAX_BACKOFF_SECONDS
        )

    def encode_balances(self, rows: Sequence[BalanceRow]) -> bytes:
        definition_id = self._definition_id
        return _encode([
            _PushRow(row.contact_id, row.amount, definition_id, row.mutated_at) for row in rows
        ])

    async def push_balances(
        self, rows: Sequence[BalanceRow], *, slot_reserved: bool = False
    ) -> PushResult:
        """Set absolute balances for up to 1,000 contacts in one request."""
        if not rows:
            return PushResult(None, {})
        if len(rows) > MAX_BATCH:
            raise ValueError(f"a balance push takes at most {MAX_BATCH} rows, got {len(rows)}")
        response = await self._call(
            "POST", f"{self._prefix}/balances", content=self.encode_balances(rows),
            slot_reserved=slot_reserved,
        )
        try:
            body = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            body = {}
        not_accepted: dict[str, str] = {}
        for row in (body.get("notAccepted") or []) if isinstance(body, dict) else []:
            if isinstance(row, dict) and row.get("contactId"):
                not_accepted[str(row["contactId"])] = str(row.get("reason") or "NotAccepted")
        transaction_id = body.get("transactionId") if isinstance(body, dict) else None
        return PushResult(transaction_id, not_accepted)

    async def get_balance(self, contact_id: str) -> Decimal | None:
        """The contact's balance in our point definition; None if Engage has no account."""
        try:
            response = await self._call("GET", self._prefix, params={"contactId": contact_id})
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        body = orjson.loads(response.content)
        items = body.get("items") or body.get("Items") or []
        for item in items:
            if item.get("definitionId") == self._definition_id:
                return cents_to_decimal(cents_from_json(item.get("balance", 0)))
        return None
