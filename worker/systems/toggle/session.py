"""Talking to Toggle: one POST per GraphQL document, with the shared token, the shared
credit bucket, re-login on `Unauthorized`, waits on `Throttled` and transport retries.

A mutation is retried only when it surely never left (a connect error); any later fault
raises AnswerLost, and the caller looks its reference up before anything else.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from worker.base.http import RESPONSES, Rejected, Retryable, make_client, with_retries
from worker.base.settings import Settings
from worker.systems.toggle import documents
from worker.systems.toggle.errors import (
    SERVICE,
    THROTTLED,
    UNAUTHORIZED,
    AnswerLost,
    DuplicateReference,
    ThrottledTooLong,
    ToggleRefused,
    ToggleUnauthorized,
    error_messages,
    refusal,
)
from worker.systems.toggle.throttle import CreditBucket
from worker.systems.toggle.token import SharedToken, bearer_from

log = logging.getLogger(__name__)

# Answers by outcome since telemetry last collected them: ok, refused, duplicate,
# unauthorized, throttled, lost (a mutation's answer), transport (retried).
OUTCOMES: Counter[str] = Counter()

# Throttled answers met by one request before it gives up (each waits for the missing
# credits, so this only ends a request while something else drains the budget).
THROTTLED_ATTEMPTS = 6

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError,
         httpx.WriteError)


class _Unauthorized(Exception):
    pass


class _Throttled(Exception):
    def __init__(self, available: float | None) -> None:
        self.available = available


def api_user_namespace(settings: Settings) -> str:
    """The Redis namespace of one Toggle API user (its token, its credit bucket)."""
    return hashlib.sha256(f"{settings.TOGGLE_API_URL}|{settings.TOGGLE_USERNAME}".encode()
                          ).hexdigest()[:16]


def credits_key(settings: Settings) -> str:
    """The shared credit bucket's key (read by /metrics too)."""
    return f"pointsync:toggle:credits:{api_user_namespace(settings)}"


class ToggleSession:
    def __init__(self, settings: Settings, redis: Redis, http: httpx.AsyncClient | None = None,
                 *, bucket: CreditBucket | None = None) -> None:
        if not settings.toggle_enabled:
            raise RuntimeError("Toggle is not configured (TOGGLE_USERNAME and the rest)")
        self.settings = settings
        self.url = str(settings.TOGGLE_API_URL)
        self.http = http or make_client(
            self.url,
            timeout=settings.HTTP_TIMEOUT_SECONDS,
            connect_timeout=settings.HTTP_CONNECT_TIMEOUT_SECONDS,
            headers={"User-Agent": settings.USER_AGENT, "Accept": "application/json"},
        )
        # One token and one budget per Toggle API user, whichever process asks.
        namespace = api_user_namespace(settings)
        self.token = SharedToken(redis, self.login, namespace=namespace)
        self.bucket = bucket or CreditBucket(
            redis, credits_key(settings),
            maximum=settings.TOGGLE_CREDITS_MAX,
            refill_per_second=settings.TOGGLE_CREDITS_REFILL_PER_SECOND)

    # -- the public calls -----------------------------------------------------------------

    async def query(self, document: str, variables: dict[str, Any], *, cost: int) -> Any:
        """A read: transport faults and 5xx retried."""
        return await self._retrying(document, variables, cost=cost, reference=None)

    async def mutate(self, document: str, variables: dict[str, Any], *, cost: int,
                     reference: str | None) -> Any:
        """A write: sent again only when it never left; else AnswerLost(reference)."""
        return await self._retrying(document, variables, cost=cost, reference=reference,
                                    write=True)

    async def login(self) -> str:
        """A new token from loginUser's answer headers (not stored: SharedToken does)."""
        s = self.settings
        assert s.TOGGLE_PASSWORD is not None  # toggle_enabled
        variables = {"username": s.TOGGLE_USERNAME,
                     "password": s.TOGGLE_PASSWORD.get_secret_value()}

        async def once() -> str:
            response, _ = await self._exchange(documents.LOGIN, variables,
                                               cost=documents.LOGIN_COST, token=None)
            token = bearer_from(response.headers.get("X-Authorization")
                                or response.headers.get("Authorization"))
            if not token:
                raise Rejected(SERVICE, "loginUser answered without an X-Authorization token")
            return token

        return await with_retries(once, attempts=s.HTTP_MAX_ATTEMPTS,
                                  max_backoff=s.HTTP_MAX_BACKOFF_SECONDS)

    # -- one request ----------------------------------------------------------------------

    async def _retrying(self, document: str, variables: dict[str, Any], *, cost: int,
                        reference: str | None, write: bool = False) -> Any:
        s = self.settings

        async def once() -> Any:
            return await self._authorized(document, variables, cost=cost,
                                          reference=reference, write=write)

        return await with_retries(once, attempts=s.HTTP_MAX_ATTEMPTS,
                                  max_backoff=s.HTTP_MAX_BACKOFF_SECONDS)

    async def _authorized(self, document: str, variables: dict[str, Any], *, cost: int,
                          reference: str | None, write: bool) -> Any:
        """With the shared token; on `Unauthorized` the token is dropped (if still the
        failing one) and the request sent once more with a fresh one."""
        for attempt in (1, 2):
            token = await self.token.get()
            try:
                _, data = await self._exchange(document, variables, cost=cost, token=token,
                                               reference=reference, write=write)
                return data
            except _Unauthorized:
                OUTCOMES["unauthorized"] += 1
                await self.token.drop(token)
                if attempt == 2:
                    break
                log.warning("Toggle said Unauthorized; logging in once more")
        raise ToggleUnauthorized(SERVICE, "Unauthorized after logging in again", 401)

    async def _exchange(self, document: str, variables: dict[str, Any], *, cost: int,
                        token: str | None, reference: str | None = None,
                        write: bool = False) -> tuple[httpx.Response, Any]:
        """Post once the credits are there; on `Throttled`, wait for the missing credits
        and post again. Returns the answer and its `data`."""
        for _ in range(THROTTLED_ATTEMPTS):
            await self.bucket.acquire(cost)
            try:
                return await self._post(document, variables, cost=cost, token=token,
                                        reference=reference, write=write)
            except _Throttled as throttled:
                OUTCOMES["throttled"] += 1
                # Refused whole, applied nothing: the bucket (now no fuller than Toggle
                # says) makes the next acquire wait for the missing credits.
                # No cost block: take the bucket for empty, so the wait is the whole cost.
                await self.bucket.reconcile(throttled.available or 0.0)
                log.warning("Toggle said Throttled (cost %d); waiting for credits", cost)
        raise ThrottledTooLong(SERVICE, f"Throttled {THROTTLED_ATTEMPTS} times", 429,
                               self.bucket.seconds_for(cost))

    async def _post(self, document: str, variables: dict[str, Any], *, cost: int,
                    token: str | None, reference: str | None,
                    write: bool) -> tuple[httpx.Response, Any]:
        request = self.http.build_request(
            "POST", self.url, content=orjson.dumps({"query": document, "variables": variables}),
            headers={"Content-Type": "application/json"})
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.http.send(request)
        except _NOT_SENT as exc:
            RESPONSES[SERVICE, "connect_error"] += 1
            OUTCOMES["transport"] += 1
            await self.bucket.give_back(cost)  # Toggle never saw it
            raise Retryable(SERVICE, f"cannot connect: {type(exc).__name__}") from exc
        except _SENT as exc:
            RESPONSES[SERVICE, "timeout" if isinstance(exc, httpx.TimeoutException)
                      else "dropped"] += 1
            raise self._lost(f"no answer: {type(exc).__name__}", reference, write) from exc
        RESPONSES[SERVICE, str(response.status_code)] += 1
        return response, await self._read(response, token, reference, write)

    async def _read(self, response: httpx.Response, token: str | None,
                    reference: str | None, write: bool) -> Any:
        status = response.status_code
        if status == 401:
            raise _Unauthorized()
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if status == 429:
            raise _Throttled(_currently_available(body) if isinstance(body, dict) else None)
        if not isinstance(body, dict):
            if status < 500 and status != 200:
                raise Rejected(SERVICE, f"HTTP {status} with a body that is not GraphQL",
                               status)
            raise self._lost(f"HTTP {status} with a body that is not JSON", reference, write,
                             status)
        available = _currently_available(body)
        if available is not None:
            await self.bucket.reconcile(available)
        new_token = bearer_from(response.headers.get("X-Authorization"))
        if token and new_token and new_token != token:
            await self.token.switch(new_token)  # sliding refresh
        messages = error_messages(body)
        if THROTTLED in messages:
            raise _Throttled(available)
        if UNAUTHORIZED in messages:
            raise _Unauthorized()
        if status >= 500:
            raise self._lost(f"HTTP {status}: {'; '.join(messages) or 'server error'}",
                             reference, write, status)
        if messages:
            error = refusal(body["errors"], status)
            OUTCOMES["duplicate" if isinstance(error, DuplicateReference) else "refused"] += 1
            raise error
        if status != 200 or not isinstance(body.get("data"), dict):
            raise Rejected(SERVICE, f"HTTP {status} without data", status)
        OUTCOMES["ok"] += 1
        return body["data"]

    def _lost(self, detail: str, reference: str | None, write: bool,
              status: int | None = None) -> Exception:
        if write:
            OUTCOMES["lost"] += 1
            return AnswerLost(detail, reference, status)
        OUTCOMES["transport"] += 1
        return Retryable(SERVICE, detail, status)


def _currently_available(body: dict[str, Any]) -> float | None:
    try:
        value = body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
    except (KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


__all__ = ["OUTCOMES", "ToggleRefused", "ToggleSession"]
