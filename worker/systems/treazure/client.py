"""Treazure (the point master) client: token, balances job, transactions, history, account.

Shapes marked [assumed] in contract.md are parsed here and nowhere else, so a tenant that
answers differently is handled by changing this module alone.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

import httpx
import msgspec
import orjson
from redis.asyncio import Redis

from worker.base.http import (
    Rejected,
    RemoteError,
    Retryable,
    make_client,
    parse_retry_after,
    send,
    with_retries,
)
from worker.base.money import (
    EXACT_FLOAT_LIMIT,
    cents_from_json,
    cents_to_decimal,
    exact_amount,
    looks_like_guid,
    utc_micros,
)
from worker.base.settings import Settings

SERVICE = "treazure"
OPERATOR_ID = "pointsync"
VAULT = "/api/v1.0/LoyaltyVault"


class BalanceEntry(NamedTuple):
    """One row of a Balances/Get result: the balance of an account as of `mutated_at`."""

    contact_id: str
    cents: int
    mutated_us: int  # mutated_at as µs since the epoch, for cheap comparisons
    mutated_at: datetime
    amount: Decimal | float | int  # exact: see money.exact_amount


# tuple.__new__ builds the named tuple in C; the generated __new__ is a Python call.
_new_entry = functools.partial(tuple.__new__, BalanceEntry)


class Booking(NamedTuple):
    """A transaction as Treazure's history shows it: the balance after it, and when."""

    balance_cents: int
    mutated_us: int


class MalformedEntry(NamedTuple):
    contact_id: str
    reason: str


class JobTimeout(RemoteError):
    """The balances job did not finish within TREAZURE_JOB_TIMEOUT_SECONDS."""


class ForeignLink(Rejected):
    """Treazure answered with a link (a job href, a next page) to another scheme, host or
    port: it is not followed, since the request would carry Treazure's bearer token."""


# Compare-and-delete: drop the shared token only if it is still the one that failed,
# so a process does not throw away a fresh token another process just fetched.
_DROP_IF_SAME = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['access_token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedToken:
    """The OAuth2 client-credentials token, cached in Redis for every worker process.

    Only one process fetches a new token at a time (a Redis lock); the others wait and read
    the one it stored. Tokens cannot be refreshed, so a new one is fetched `margin` seconds
    before expiry.
    """

    def __init__(
        self,
        redis: Redis,
        fetch: Callable[[], Any],
        *,
        namespace: str,
        margin_seconds: float,
    ) -> None:
        self._redis = redis
        self._fetch = fetch
        self._key = f"pointsync:treazure-token:{namespace}"
        self._margin = margin_seconds
        self._local: tuple[str, float] | None = None
        self._drop_script = redis.register_script(_DROP_IF_SAME)

    def _fresh(self, token: tuple[str, float] | None) -> str | None:
        if token and token[1] - self._margin > time.time():
            return token[0]
        return None

    async def _from_redis(self) -> str | None:
        raw = await self._redis.get(self._key)
        if raw is None:
            return None
        data = orjson.loads(raw)
        self._local = (data["access_token"], float(data["expires_at"]))
        return self._fresh(self._local)

    async def get(self) -> str:
        token = self._fresh(self._local) or await self._from_redis()
        if token:
            return token
        async with self._redis.lock(f"{self._key}:lock", timeout=60, blocking_timeout=60):
            token = await self._from_redis()
            if token:
                return token
            access_token, expires_in = await self._fetch()
            expires_at = time.time() + expires_in
            ttl_ms = max(1, int((expires_in - self._margin) * 1000))
            await self._redis.set(
                self._key,
                orjson.dumps({"access_token": access_token, "expires_at": expires_at}),
                px=ttl_ms,
            )
            self._local = (access_token, expires_at)
            return access_token

    async def invalidate(self, token: str) -> None:
        if self._local and self._local[0] == token:
            self._local = None
        await self._drop_script(keys=[self._key], args=[token])


class TreazureClient:
    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None):
        self._settings = settings
        self._loyalty_id = settings.TREAZURE_LOYALTY_ID
        self._http = http or make_client(
            str(settings.TREAZURE_BASE_URL),
            timeout=settings.HTTP_TIMEOUT_SECONDS,
            connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS,
            headers={"User-Agent": settings.USER_AGENT, "Accept": "application/json"},
        )
        namespace = hashlib.sha256(
            f"{settings.TREAZURE_BASE_URL}|{settings.TREAZURE_CLIENT_ID}".encode()
        ).hexdigest()[:16]
        self.token = SharedToken(
            redis,
            self._request_token,
            namespace=namespace,
            margin_seconds=settings.TREAZURE_TOKEN_MARGIN_SECONDS,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> TreazureClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------------------

    async def _request_token(self) -> tuple[str, float]:
        s = self._settings
        form = {
            "grant_type": "client_credentials",
            "client_id": s.TREAZURE_CLIENT_ID,
            "client_secret": s.TREAZURE_CLIENT_SECRET.get_secret_value(),
            "scope": s.TREAZURE_SCOPE,
        }

        async def once() -> httpx.Response:
            request = self._http.build_request("POST", "/identity/connect/token", data=form)
            return await send(self._http, SERVICE, request)

        response = await self._with_retries(once)
        body = response.json()
        try:
            return str(body["access_token"]), float(body.get("expires_in", 3600))
        except (KeyError, TypeError, ValueError):
            raise Rejected(SERVICE, "token answer has no access_token") from None

    async def request_token(self) -> float:
        """Ask Treazure for a new token (not the shared one): the credentials' check.
        Returns the seconds it is valid for."""
        return (await self._request_token())[1]

    async def _with_retries(self, call: Callable[[], Any]) -> Any:
        s = self._settings
        return await with_retries(
            call, attempts=s.HTTP_MAX_ATTEMPTS, max_backoff=s.HTTP_MAX_BACKOFF_SECONDS
        )

    async def _authorized(
        self, method: str, url: str, *, write: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request with the shared token; on 401 a new token is fetched once."""
        token = await self.token.get()
        request = self._http.build_request(method, url, **kwargs)
        request.headers["Authorization"] = f"Bearer {token}"
        try:
            return await send(self._http, SERVICE, request, write=write)
        except Rejected as exc:
            if exc.status != 401:
                raise
        await self.token.invalidate(token)
        request.headers["Authorization"] = f"Bearer {await self.token.get()}"
        return await send(self._http, SERVICE, request, write=write)

    async def _read_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """A repeatable call whose answer must be a JSON object; a garbled 2xx body (a
        proxy's HTML page, say) is retried like a 5xx."""

        async def once() -> dict[str, Any]:
            return _json(await self._authorized(method, url, **kwargs))

        return await self._with_retries(once)

    async def _read(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A call that is safe to repeat, retried on connect errors, 429 and 5xx."""
        return await self._with_retries(lambda: self._authorized(method, url, **kwargs))

    # -- balances job -----------------------------------------------------------------

    async def start_balances_job(self, mutated_from: datetime, mutated_to: datetime) -> str:
        body = {
            "mutatedFrom": _iso(mutated_from),
            "mutatedTo": _iso(mutated_to),
            "loyaltyPointDefinitionId": self._loyalty_id,
        }
        # Starting a job reads nothing and changes nothing: repeating it is harmless.
        answer = await self._read_json(
            "POST", "/api/v1.0/LoyaltyVault/Balances/Get", content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        href = answer.get("href")
        if not isinstance(href, str) or not href.startswith("/"):
            raise Rejected(SERVICE, "Balances/Get answered without a relative href")
        return self._own_link(href, "balances job")

    def _own_link(self, link: str, what: str) -> str:
        """`link` if it leads to Treazure's own scheme, host and port (relative links do);
        ForeignLink otherwise, before any request is sent there."""
        base = self._http.base_url
        target = base.join(link)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise ForeignLink(
                SERVICE, f"the {what} link points to {_origin(target)}, not to Treazure's "
                         f"{_origin(base)}; not followed (the request would carry the token)")
        return link

    async def _first_page(self, href: str) -> httpx.Response:
        """Poll `{href}/result` until it is ready, honouring 202 and Retry-After."""
        deadline = time.monotonic() + self._settings.TREAZURE_JOB_TIMEOUT_SECONDS
        pause = 0.2
        while True:
            response = await self._read("GET", f"{href}/result")
            if response.status_code != 202:
                return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(
                    SERVICE,
                    f"balances job {href} still running after "
                    f"{self._settings.TREAZURE_JOB_TIMEOUT_SECONDS:g} s",
                )
            hinted = _retry_after(response)
            wait = hinted if hinted is not None else pause
            pause = min(pause * 2, 5.0)
            await asyncio.sleep(min(wait, remaining))

    async def _pages(
        self, href: str
    ) -> AsyncIterator[tuple[list[BalanceEntry], list[MalformedEntry]]]:
        response = await self._first_page(href)
        while True:
            raw = response.content
            next_href = _decode_next(raw).next
            if next_href:
                next_href = self._own_link(next_href, "next page")
            # The next page is on its way while this one is parsed and consumed.
            following = (
                asyncio.create_task(self._read("GET", next_href)) if next_href else None
            )
            try:
                good, bad, _ = parse_page(raw, self._loyalty_id)
                yield good, bad
            except BaseException:  # the consumer stopped (or failed): drop the prefetch
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return
            response = await following

    async def balance_pages(
        self, mutated_from: datetime, mutated_to: datetime
    ) -> AsyncIterator[tuple[list[BalanceEntry], list[MalformedEntry]]]:
        """Stream the job's pages, one parsed page at a time (memory stays flat).

        A `410` means the result expired: the job is started again once, and the stream
        starts over from its first page (the caller's newest-wins rule absorbs repeats).
        """
        restarted = False
        while True:
            href = await self.start_balances_job(mutated_from, mutated_to)
            try:
                async for page in self._pages(href):
                    yield page
                return
            except Rejected as exc:
                if exc.status != 410 or restarted:
                    raise
                restarted = True

    # -- single account ---------------------------------------------------------------

    async def get_balance(self, contact_id: str) -> Decimal | None:
        """The account's current balance in our loyalty program; None if unknown."""
        try:
            account = await self._read_json(
                "GET", _account_path(contact_id))
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        cents = _program_cents(account, self._loyalty_id)
        return None if cents is None else cents_to_decimal(cents)


    # -- point transactions and history --------------------------------------------

    async def book_points(
        self, contact_id: str, cents: int, comment: str, receipt_nr: str
    ) -> int | None:
        """Book `cents` (+ load, - redemption) once: ONE request, never repeated here.

        Returns the new balance in cents (None if the 2xx body does not say). Raises
        Retryable (surely not booked), Ambiguous (may be booked: read the history for
        `receipt_nr` before sending again) or Rejected (refused, e.g. 422 InsufficientBalance).
        """
        kind = "loads" if cents > 0 else "redemptions"
        body = {
            "loyaltyPrograms": [{"loyaltyPointDefinitionId": self._loyalty_id,
                                 kind: [{"value": exact_amount(abs(cents))}]}],
            "context": {"comment": comment, "receiptNr": receipt_nr, "operatorId": OPERATOR_ID},
        }
        response = await self._authorized(
            "POST", f"{_account_path(contact_id)}/Transaction", write=True,
            content=orjson.dumps(body), headers={"Content-Type": "application/json"},
        )
        try:
            return _program_cents(orjson.loads(response.content), self._loyalty_id)
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError):
            return None  # booked for sure (2xx); the history says the balance

    async def history(self, contact_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The account's history, oldest first (from `since` when given), as received."""
        params = {"from": _iso(since)} if since is not None else None
        url = f"{_account_path(contact_id)}/LoyaltyPrograms/{self._loyalty_id}/History"

        async def once() -> list[dict[str, Any]]:
            response = await self._authorized("GET", url, params=params)
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise Retryable(SERVICE, "history answer is not JSON") from None
            if not isinstance(body, list):
                raise Rejected(SERVICE, "history answer is not a JSON array")
            return [entry for entry in body if isinstance(entry, dict)]

        return await self._with_retries(once)

    async def find_receipt(
        self, contact_id: str, receipt_nr: str, since: datetime | None = None
    ) -> Booking | None:
        """The history entry of our transaction `receipt_nr`, if Treazure booked it."""
        return receipt_in(await self.history(contact_id, since), receipt_nr)


class _Item(msgspec.Struct):
    accountNumber: str
    # Turned into exact cents by money.cents_from_json; decimal text is accepted too.
    balance: int | float | str
    mutatedAt: Annotated[datetime, msgspec.Meta(tz=True)]
    loyaltyPointDefinitionId: str | None = None


class _Page(msgspec.Struct):
    items: list[_Item] | None = None
    next: str | None = None


class _LoosePage(msgspec.Struct):
    items: list[Any] | None = None
    next: str | None = None


class _NextOnly(msgspec.Struct):
    next: str | None = None


_decode_page = msgspec.json.Decoder(_Page).decode
_decode_next = msgspec.json.Decoder(_NextOnly).decode
_decode_loose_page = msgspec.json.Decoder(_LoosePage).decode


def _entry(item: _Item) -> BalanceEntry:
    contact_id = item.accountNumber
    if not looks_like_guid(contact_id):
        raise ValueError(f"accountNumber {contact_id!r} is not a GUID")
    balance = item.balance
    if type(balance) is float and -EXACT_FLOAT_LIMIT < balance < EXACT_FLOAT_LIMIT:
        # money.cents_from_json's fast path, inlined: this runs a million times a sync.
        cents = round(balance * 100)
        if cents / 100 != balance:
            raise ValueError(f"balance {balance!r} has more than 2 decimals")
        amount: int | float | Decimal = balance  # exact for output as it is
    else:
        cents = cents_from_json(balance)
        amount = exact_amount(cents)
    moment = item.mutatedAt
    return _new_entry((contact_id, cents, utc_micros(moment), moment, amount))


def parse_page(
    raw: bytes, loyalty_id: str
) -> tuple[list[BalanceEntry], list[MalformedEntry], str | None]:
    """One result page → good rows, bad rows (returned, never dropped) and the next href.

    The whole page is decoded and validated in one C pass; only a page holding a bad row
    takes the row-by-row path that tells which rows are bad and why.
    """
    good: list[BalanceEntry] = []
    bad: list[MalformedEntry] = []
    try:
        page = _decode_page(raw)
    except msgspec.ValidationError:
        loose = _decode_loose_page(raw)
        for item in loose.items or ():
            try:
                parsed = msgspec.convert(item, _Item)
                if parsed.loyaltyPointDefinitionId in (None, loyalty_id):
                    good.append(_entry(parsed))
            except (msgspec.ValidationError, ValueError, ArithmeticError) as exc:
                who = item.get("accountNumber") if isinstance(item, dict) else None
                bad.append(MalformedEntry(
                    str(who or "?"), f"malformed entry: {exc}; entry {item!r}"[:200]))
        return good, bad, loose.next
    append = good.append
    for item in page.items or ():
        if item.loyaltyPointDefinitionId not in (None, loyalty_id):
            continue  # another program's balance: not ours to sync
        try:
            append(_entry(item))
        except (ValueError, ArithmeticError) as exc:
            bad.append(MalformedEntry(item.accountNumber, f"malformed entry: {exc}"[:200]))
    return good, bad, page.next


def parse_balance_page(
    raw: bytes, loyalty_id: str
) -> tuple[list[BalanceEntry], list[MalformedEntry]]:
    good, bad, _ = parse_page(raw, loyalty_id)
    return good, bad


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


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port is not None else "")


def _account_path(contact_id: str) -> str:
    return f"{VAULT}/Account/{contact_id}"


def _program_cents(account: Any, loyalty_id: str) -> int | None:
    """Our program's balance in an Account answer (Transaction and Account share it)."""
    for program in account.get("loyaltyPrograms") or []:
        if program.get("loyaltyPointDefinitionId") == loyalty_id:
            return cents_from_json(program["balance"])
    return None


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("window times must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise Retryable(SERVICE, f"HTTP {response.status_code} with a body that is not JSON") \
            from None
    if not isinstance(body, dict):
        raise Rejected(SERVICE, "expected a JSON object")
    return body


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))
