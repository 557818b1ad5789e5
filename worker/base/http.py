"""What both API clients share: error classes, Retry-After, retry policy, timeouts.

The classification follows what a failure says about the request:
- `Retryable`: surely not applied, or harmless to repeat (connect errors, 429, 5xx on reads);
- `Ambiguous`: a write that may have been applied (read timeout, dropped connection, 5xx
  after sending) — the caller resolves it before any retry;
- `Rejected`: a 4xx the remote will answer again; retrying cannot help.
"""

from __future__ import annotations

import email.utils
import functools
import html
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from worker.base.backoff import jittered
from worker.base.logs import default_redactor

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

# Every answer (and transport failure) this process got, by (service, status), since
# worker/telemetry.py last moved them to Redis for /metrics. One dict increment per
# request is all the hot path pays; statuses are HTTP codes as strings, or
# "connect_error", "timeout", "dropped".
RESPONSES: Counter[tuple[str, str]] = Counter()


class RemoteError(Exception):
    """A call to Treazure or Engage failed; `service` and `status` say where and how."""

    def __init__(
        self,
        service: str,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Redacted here, where a remote's text enters: the reason goes on to ledger rows,
        # run errors, task results and Flower, not only to the logs.
        message = default_redactor()(message)
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.retry_after = retry_after
        self.reason = message


class Retryable(RemoteError):
    """Not applied (or safe to repeat): try again after a pause."""


class Ambiguous(RemoteError):
    """A write whose outcome is unknown: it may or may not have been applied."""


class Rejected(RemoteError):
    """The remote refused the request; repeating it cannot succeed."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def error_detail(response: httpx.Response, limit: int = 200) -> str:
    """A short, printable reason from an error body that may be JSON, text or HTML."""
    text = response.text
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "reason", "title", "errorCode", "error_description"):
            if isinstance(body.get(key), str):
                text = body[key]
                break
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()
    return text[:limit] or response.reason_phrase or "no detail"


def classify_response(service: str, response: httpx.Response, *, write: bool = False) -> None:
    """Raise the error class that fits a non-2xx answer; return for a success."""
    if response.is_success:
        return
    status = response.status_code
    detail = f"HTTP {status}: {error_detail(response)}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        # Throttled requests are refused before any work, so even writes are safe to repeat.
        raise Retryable(service, detail, status, retry_after)
    if status in RETRYABLE_STATUS:
        cls = Ambiguous if write else Retryable
        raise cls(service, detail, status, retry_after)
    raise Rejected(service, detail, status)


async def send(
    client: httpx.AsyncClient,
    service: str,
    request: httpx.Request,
    *,
    write: bool = False,
) -> httpx.Response:
    """Send one request and translate transport failures into the three error classes."""
    try:
        response = await client.send(request)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        RESPONSES[service, _transport_status(exc)] += 1
        # The request never left: safe to repeat even for a write.
        raise Retryable(service, f"cannot connect: {type(exc).__name__}") from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError,
            httpx.ReadError, httpx.WriteError) as exc:
        RESPONSES[service, _transport_status(exc)] += 1
        cls = Ambiguous if write else Retryable
        raise cls(service, f"no answer: {type(exc).__name__}") from exc
    RESPONSES[service, str(response.status_code)] += 1
    _release_request(response)
    classify_response(service, response, write=write)
    return response


def _release_request(response: httpx.Response) -> None:
    """Break the reference cycle httpx leaves between a read response and its stream.

    The cycle holds the response, its request and the request's body (150 KB for a push of
    1,000 balances) until a full garbage collection, which a long sync seldom runs: the
    sync child grew by tens of MB of request bodies. The body was read (not streamed), so
    the stream is the content already in memory.
    """
    response.stream = httpx.ByteStream(response.content)


async def deliver_once(client: httpx.AsyncClient, service: str, request: httpx.Request
                       ) -> httpx.Response:
    """One attempt of a write to a destination that answers 5xx only when it did not take
    the request (the relays' destinations): an answered 5xx may be sent again (Retryable);
    only a request that went out and got no answer is Ambiguous."""
    try:
        return await send(client, service, request, write=True)
    except Ambiguous as error:
        if error.status is None:
            raise
        raise Retryable(service, error.reason, error.status, error.retry_after) from error


def _transport_status(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    return "dropped"  # the connection broke after the request was sent


class BackoffWait:
    """tenacity wait: Retry-After when the remote gave one, else capped exponential jitter."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.initial = initial
        self.maximum = maximum

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return jittered(self.initial, state.attempt_number - 1, self.maximum,
                        retry_after=getattr(error, "retry_after", None))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    max_backoff: float,
    retry_on: tuple[type[BaseException], ...] = (Retryable,),
) -> T:
    """Run `call` until it succeeds, retrying only the given error classes."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=BackoffWait(maximum=max_backoff),
        retry=retry_if_exception_type(retry_on),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every client: httpx builds a new
    one per client (loading the CA bundle, about 40 ms of CPU), and a sync run builds
    three clients. Read once, as httpx reads it: SSL_CERT_FILE, SSL_CERT_DIR, certifi."""
    return httpx.create_ssl_context()


def make_client(
    base_url: str,
    *,
    timeout: float,
    connect_timeout: float,
    headers: dict[str, str] | None = None,
    max_connections: int = 32,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        verify=tls_context(),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )
