"""Talking to Treazure: its address and paths, the shared token on every request, retries,
and what its answers must look like to be read at all."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import httpx
import orjson
from redis.asyncio import Redis

from worker.base.http import Rejected, Retryable, make_client, send, with_retries
from worker.base.settings import Settings
from worker.systems.treazure.token import SharedToken

SERVICE = "treazure"
TOKEN_PATH = "/identity/connect/token"
VAULT = "/api/v1.0/LoyaltyVault"

_T = TypeVar("_T")


def account_path(contact_id: str) -> str:
    return f"{VAULT}/Account/{contact_id}"


class Caller(Protocol):
    """Where a Treazure call goes: the session's httpx, or an aiohttp session (aio.py)."""

    @property
    def settings(self) -> Settings: ...

    async def call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                   body: bytes | None = None, write: bool = False) -> bytes: ...

    async def with_retries(self, call: Callable[[], Awaitable[_T]]) -> _T: ...


class TreazureSession:
    """One HTTP client and the shared token: every call the Treazure modules make."""

    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None):
        self.settings = settings
        self.http = http or make_client(
            str(settings.TREAZURE_BASE_URL),
            timeout=settings.HTTP_TIMEOUT_SECONDS,
            connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS,
            headers={"User-Agent": settings.USER_AGENT, "Accept": "application/json"},
        )
        # One token per Treazure and client id, whichever process asks.
        namespace = hashlib.sha256(
            f"{settings.TREAZURE_BASE_URL}|{settings.TREAZURE_CLIENT_ID}".encode()
        ).hexdigest()[:16]
        self.token = SharedToken(
            redis,
            self.request_token,
            namespace=namespace,
            margin_seconds=settings.TREAZURE_TOKEN_MARGIN_SECONDS,
        )

    async def request_token(self) -> tuple[str, float]:
        """A new token (not the shared one) and the seconds it is valid for."""
        s = self.settings
        form = {
            "grant_type": "client_credentials",
            "client_id": s.TREAZURE_CLIENT_ID,
            "client_secret": s.TREAZURE_CLIENT_SECRET.get_secret_value(),
            "scope": s.TREAZURE_SCOPE,
        }

        async def once() -> httpx.Response:
            request = self.http.build_request("POST", TOKEN_PATH, data=form)
            return await send(self.http, SERVICE, request)

        response = await self.with_retries(once)
        body = response.json()
        try:
            return str(body["access_token"]), float(body.get("expires_in", 3600))
        except (KeyError, TypeError, ValueError):
            raise Rejected(SERVICE, "token answer has no access_token") from None

    async def with_retries(self, call: Callable[[], Awaitable[_T]]) -> _T:
        s = self.settings
        return await with_retries(
            call, attempts=s.HTTP_MAX_ATTEMPTS, max_backoff=s.HTTP_MAX_BACKOFF_SECONDS
        )

    async def authorized(
        self, method: str, url: str, *, write: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request with the shared token; on 401 a new token is fetched once."""
        token = await self.token.get()
        request = self.http.build_request(method, url, **kwargs)
        request.headers["Authorization"] = f"Bearer {token}"
        try:
            return await send(self.http, SERVICE, request, write=write)
        except Rejected as exc:
            if exc.status != 401:
                raise
        await self.token.invalidate(token)
        request.headers["Authorization"] = f"Bearer {await self.token.get()}"
        return await send(self.http, SERVICE, request, write=write)

    async def call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                   body: bytes | None = None, write: bool = False) -> bytes:
        """One request with the shared token (see `authorized`); the 2xx body. A `body`
        goes as JSON."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        response = await self.authorized(method, path, write=write, params=params,
                                         content=body, headers=headers)
        return response.content

    async def read_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """A repeatable call whose answer must be a JSON object; a garbled 2xx body (a
        proxy's HTML page, say) is retried like a 5xx."""

        async def once() -> dict[str, Any]:
            return json_object(await self.authorized(method, url, **kwargs))

        return await self.with_retries(once)

    async def read(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A call that is safe to repeat, retried on connect errors, 429 and 5xx."""
        return await self.with_retries(lambda: self.authorized(method, url, **kwargs))


def json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise Retryable(SERVICE, f"HTTP {response.status_code} with a body that is not JSON") \
            from None
    if not isinstance(body, dict):
        raise Rejected(SERVICE, "expected a JSON object")
    return body
