"""Treazure on one aiohttp session, for work with many requests in flight (a history
refresh's chunk, the booking rounds). Measured on this 2-core machine, aiohttp spends about
an eighth of httpx's CPU on a request (0.5 ms against 4.4 ms under load).

The rules of every Treazure call hold, as on the session's httpx (worker/base/http.py's
`send`): the shared token (a new one once on 401), the same error classes and response
counts; a write that went out and got no (whole) answer is Ambiguous, never repeated here.
aiohttp itself repeats a request only on a kept-alive connection closed before any answer,
and only for idempotent methods (never a POST).
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import httpx

from worker.base.http import RESPONSES, Ambiguous, Rejected, Retryable, classify_response
from worker.base.settings import Settings
from worker.systems.treazure.session import SERVICE, TreazureSession

if TYPE_CHECKING:
    import aiohttp

_T = TypeVar("_T")
_JSON = {"Content-Type": "application/json"}
KEEPALIVE_SECONDS = 5.0  # httpx's keepalive_expiry


class AioTreazure:
    """At most `concurrency` kept-alive connections to Treazure (`async with` it, or
    `open`/`close`); calls take the session's shared token and retry policy."""

    def __init__(self, session: TreazureSession, concurrency: int) -> None:
        self._session = session
        self._concurrency = concurrency
        self._base = str(session.settings.TREAZURE_BASE_URL).rstrip("/")
        self._http: aiohttp.ClientSession | None = None

    @property
    def settings(self) -> Settings:
        return self._session.settings

    def open(self) -> None:
        """Make the aiohttp session (on the running loop), unless open already."""
        if self._http is not None:
            return
        # Imported here: aiohttp is ~9.5 MB in every worker process otherwise, and only
        # the history chunks and the booking rounds use it.
        import aiohttp

        s = self._session.settings
        self._http = aiohttp.ClientSession(
            # Idle connections closed after 5 s, as httpx does: a POST sent on one the
            # server closed meanwhile fails with no answer, and is then left uncertain.
            connector=aiohttp.TCPConnector(limit=self._concurrency,
                                           keepalive_timeout=KEEPALIVE_SECONDS),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.HTTP_CONNECT_TIMEOUT_SECONDS,
                                          sock_read=s.HTTP_TIMEOUT_SECONDS),
            headers={"User-Agent": s.USER_AGENT, "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
            # The environment's proxy, as httpx takes it, looked up once: aiohttp's
            # trust_env looks up the proxy and ~/.netrc in a thread on every request.
            proxy=env_proxy(self._base),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> AioTreazure:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def with_retries(self, call: Callable[[], Awaitable[_T]]) -> _T:
        return await self._session.with_retries(call)

    async def call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                   body: bytes | None = None, write: bool = False) -> bytes:
        """One request with the shared token (a new one once on 401); the 2xx body."""
        token = self._session.token
        current = await token.get()
        try:
            return await self._send(method, path, params, body, current, write)
        except Rejected as exc:
            if exc.status != 401:
                raise
        await token.invalidate(current)
        return await self._send(method, path, params, body, await token.get(), write)

    async def _send(self, method: str, path: str, params: dict[str, str] | None,
                    body: bytes | None, token: str, write: bool) -> bytes:
        if self._http is None:
            raise RuntimeError("AioTreazure used before it was opened")
        import aiohttp  # loaded by `open` already

        headers = {"Authorization": f"Bearer {token}", **(_JSON if body is not None else {})}
        try:
            async with self._http.request(method, self._base + path, params=params, data=body,
                                          headers=headers, allow_redirects=False) as response:
                status, content = response.status, await response.read()
                failed = None if 200 <= status < 300 else httpx.Response(
                    status, headers=list(response.headers.items()), content=content)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The request never left: as httpx's ConnectError / ConnectTimeout.
            RESPONSES[SERVICE, "timeout" if isinstance(exc, TimeoutError)
                      else "connect_error"] += 1
            raise Retryable(SERVICE, f"cannot connect: {type(exc).__name__}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, and no (whole) answer: a read may be asked again, a write may be booked.
            RESPONSES[SERVICE, "timeout" if isinstance(exc, TimeoutError) else "dropped"] += 1
            cls = Ambiguous if write else Retryable
            raise cls(SERVICE, f"no answer: {type(exc).__name__}") from exc
        RESPONSES[SERVICE, str(status)] += 1
        if failed is not None:
            classify_response(SERVICE, failed, write=write)  # raises the class it calls for
        return content


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
