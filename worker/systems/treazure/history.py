"""A Treazure account's points history: read it, one account at a time on the client's httpx
or many on one aiohttp session (a refresh's chunk), and find one of our bookings in it."""

from __future__ import annotations

import urllib.parse
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson

from worker.base.http import RESPONSES, Rejected, Retryable, classify_response
from worker.base.money import cents_from_json, utc_micros
from worker.base.times import utc_seconds_text
from worker.systems.treazure.session import SERVICE, TreazureSession, account_path

if TYPE_CHECKING:
    import aiohttp


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
    session: TreazureSession, contact_id: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The account's history, oldest first (from `since` when given), as received."""
    url = history_path(contact_id, session.settings.TREAZURE_LOYALTY_ID)
    params = history_params(since)

    async def once() -> list[dict[str, Any]]:
        return parse_history((await session.authorized("GET", url, params=params)).content)

    return await session.with_retries(once)


class HistoryReader:
    """Many accounts' histories on one aiohttp session of at most `concurrency` kept-alive
    connections, for one refresh chunk. Measured on this 2-core machine, aiohttp spends
    about an eighth of httpx's CPU on such a request (0.5 ms against 4.4 ms under load),
    and the request is most of a refresh's cost per contact. The rules of every Treazure
    read hold: the shared token (a new one once on 401), retries with backoff on 429, 5xx,
    garbled answers and dropped connections, and the same error classes and response
    counts."""

    def __init__(self, session: TreazureSession, concurrency: int) -> None:
        self._session = session
        self._concurrency = concurrency
        settings = session.settings
        self._base = str(settings.TREAZURE_BASE_URL).rstrip("/")
        self._loyalty_id = settings.TREAZURE_LOYALTY_ID
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HistoryReader:
        # Imported here: aiohttp is ~9.5 MB in every worker process otherwise, and only
        # the history chunks use it.
        import aiohttp

        s = self._session.settings
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.HTTP_CONNECT_TIMEOUT_SECONDS,
                                          sock_read=s.HTTP_TIMEOUT_SECONDS),
            headers={"User-Agent": s.USER_AGENT, "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
            # The environment's proxy, as httpx takes it, looked up once: aiohttp's
            # trust_env looks up the proxy and ~/.netrc in a thread on every request.
            proxy=env_proxy(self._base),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def read(self, contact_id: str, since: datetime | None = None
                   ) -> list[dict[str, Any]]:
        """The account's history, oldest first (from `since` when given), as received."""
        url = self._base + history_path(contact_id, self._loyalty_id)
        params = history_params(since)
        return await self._session.with_retries(lambda: self._authorized(url, params))

    async def _authorized(self, url: str, params: dict[str, str] | None
                          ) -> list[dict[str, Any]]:
        token = self._session.token
        current = await token.get()
        try:
            return await self._get(url, params, current)
        except Rejected as exc:
            if exc.status != 401:
                raise
        await token.invalidate(current)
        return await self._get(url, params, await token.get())

    async def _get(self, url: str, params: dict[str, str] | None, token: str
                   ) -> list[dict[str, Any]]:
        if self._http is None:
            raise RuntimeError("HistoryReader used outside `async with`")
        import aiohttp  # loaded by __aenter__ already

        try:
            async with self._http.get(url, params=params, allow_redirects=False,
                                      headers={"Authorization": f"Bearer {token}"}) as response:
                status, body = response.status, await response.read()
                failed = None if 200 <= status < 300 else httpx.Response(
                    status, headers=list(response.headers.items()), content=body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The request never left: as httpx's ConnectError / ConnectTimeout.
            RESPONSES[SERVICE, "timeout" if isinstance(exc, TimeoutError)
                      else "connect_error"] += 1
            raise Retryable(SERVICE, f"cannot connect: {type(exc).__name__}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, and no (whole) answer: a read, so safe to ask again.
            RESPONSES[SERVICE, "timeout" if isinstance(exc, TimeoutError) else "dropped"] += 1
            raise Retryable(SERVICE, f"no answer: {type(exc).__name__}") from exc
        RESPONSES[SERVICE, str(status)] += 1
        if failed is not None:
            classify_response(SERVICE, failed)  # raises the class the status calls for
        return parse_history(body)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


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
