"""Engage client: balance pushes (headers, exact amounts, limits, throttling) and reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest
import respx

from tests.support.unit import API_KEY, ENGAGE, SleepRecorder, json_response, mocked_http
from worker.base.http import Rejected, Retryable
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.systems.engage.client import Balance, EngageClient, PushResult

PUSH_V3 = "/api/v3/point-accounts/balances"
READ_V3 = "/api/v3/point-accounts"
AT = "2026-11-21T09:14:03Z"


class RecordingLimiter:
    """Stands in for the shared limiter and notes when it is consulted."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def acquire(self) -> None:
        self.events.append("limiter")


def answering(events: list[str], *answers: httpx.Response | Exception):
    """A route side effect that notes each request, then answers in order."""
    pending = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        events.append("request")
        result = pending.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    return answer


def rows(count: int) -> list[Balance]:
    return [Balance(f"c{i}", Decimal(i), AT) for i in range(count)]


@pytest.fixture
def api() -> respx.MockRouter:
    return respx.MockRouter(base_url=ENGAGE, assert_all_called=False)


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
async def make_engage(
    api: respx.MockRouter, settings: Settings, events: list[str]
) -> AsyncIterator[Callable[..., EngageClient]]:
    opened: list[EngageClient] = []

    def make(custom: Settings | None = None, limiter: object | None = None) -> EngageClient:
        client = EngageClient(
            custom or settings, limiter or RecordingLimiter(events),  # type: ignore[arg-type]
            http=mocked_http(api, ENGAGE),
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
def engage(make_engage: Callable[..., EngageClient]) -> EngageClient:
    return make_engage()


# -- push: request shape ------------------------------------------------------------------


async def test_push_sends_the_required_headers_and_exact_amounts(
    settings: Settings, events: list[str]
) -> None:
    # The client builds its own httpx client here: the headers are its job.
    with respx.mock(base_url=ENGAGE) as mock:
        push = mock.post(PUSH_V3).mock(return_value=json_response(202, {"transactionId": "t"}))
        async with EngageClient(settings, RecordingLimiter(events)) as engage:  # type: ignore[arg-type]
            await engage.push_balances([
                Balance("c1", Decimal("1250.5"), AT),
                Balance("c2", Decimal("-0.05"), "2026-11-21T09:15:00Z"),
                Balance("c3", Decimal("3"), AT),
                Balance("c4", Decimal("12345678901234567.89"), AT),
            ])

    request = push.calls[0].request
    assert request.headers["apikey"] == API_KEY
    assert request.headers["User-Agent"] == "pointsync/0.1.0"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"

    raw = request.content
    assert b'"amount":1250.5,' in raw
    assert b'"amount":-0.05,' in raw
    assert b'"amount":3,' in raw
    assert b'"amount":12345678901234567.89,' in raw  # beyond what a float can hold
    assert json.loads(raw, parse_float=Decimal) == [
        {"contactId": "c1", "amount": Decimal("1250.5"), "definitionId": 1, "timeStamp": AT},
        {"contactId": "c2", "amount": Decimal("-0.05"), "definitionId": 1,
         "timeStamp": "2026-11-21T09:15:00Z"},
        {"contactId": "c3", "amount": 3, "definitionId": 1, "timeStamp": AT},
        {"contactId": "c4", "amount": Decimal("12345678901234567.89"), "definitionId": 1,
         "timeStamp": AT},
    ]


async def test_api_version_and_definition_come_from_settings(
    api, make_engage, make_settings
) -> None:
    v2 = api.post("/api/v2/point-accounts/balances").mock(return_value=httpx.Response(202))
    v3 = api.post(PUSH_V3).mock(return_value=httpx.Response(202))
    engage = make_engage(make_settings(ENGAGE_API_VERSION="v2", ENGAGE_DEFINITION_ID=7))

    await engage.push_balances([Balance("c1", Decimal(1), AT)])

    assert (v2.call_count, v3.call_count) == (1, 0)
    assert json.loads(v2.calls[0].request.content)[0]["definitionId"] == 7


async def test_exactly_1000_rows_go_in_one_request(api, engage) -> None:
    push = api.post(PUSH_V3).mock(return_value=httpx.Response(202))

    await engage.push_balances(rows(1000))

    assert push.call_count == 1
    assert len(json.loads(push.calls[0].request.content)) == 1000


async def test_more_than_1000_rows_are_refused_before_any_request(api, engage, events) -> None:
    push = api.post(PUSH_V3).mock(return_value=httpx.Response(202))

    with pytest.raises(ValueError, match="1000"):
        await engage.push_balances(rows(1001))

    assert push.call_count == 0
    assert events == []


async def test_empty_push_sends_nothing(api, engage, events) -> None:
    push = api.post(PUSH_V3).mock(return_value=httpx.Response(202))

    assert await engage.push_balances([]) == PushResult(None, {})
    assert push.call_count == 0
    assert events == []


# -- push: answers and faults ------------------------------------------------------------


async def test_not_accepted_rows_are_returned(api, engage) -> None:
    api.post(PUSH_V3).mock(return_value=json_response(202, {
        "transactionId": "c0a8",
        "notAccepted": [
            {"contactId": "c2", "reason": "ContactNotFound"},
            {"contactId": "c3"},
        ],
    }))

    result = await engage.push_balances(rows(4))

    assert result.transaction_id == "c0a8"
    assert result.not_accepted == {"c2": "ContactNotFound", "c3": "NotAccepted"}


async def test_accepted_push_without_body(api, engage) -> None:
    api.post(PUSH_V3).mock(return_value=httpx.Response(202))

    assert await engage.push_balances(rows(2)) == PushResult(None, {})


async def test_429_is_retried_after_retry_after_with_the_limiter_before_each_attempt(
    api, make_engage, make_settings, events, sleeps: SleepRecorder
) -> None:
    engage = make_engage(make_settings(HTTP_MAX_BACKOFF_SECONDS=60))
    api.post(PUSH_V3).mock(side_effect=answering(
        events,
        httpx.Response(429, headers={"Retry-After": "2"}),
        json_response(202, {"transactionId": "t"}),
    ))

    result = await engage.push_balances(rows(3))

    assert result.transaction_id == "t"
    assert sleeps.delays == [2.0]
    assert events == ["limiter", "request", "limiter", "request"]


@pytest.mark.parametrize(
    "fault",
    [httpx.Response(503), httpx.Response(502, text="bad gateway"), httpx.ReadTimeout("slow"),
     httpx.ConnectError("refused")],
    ids=["503", "502", "read-timeout", "connect-error"],
)
async def test_transient_faults_are_retried_since_a_push_is_an_overwrite(
    api, engage, events, fault
) -> None:
    api.post(PUSH_V3).mock(side_effect=answering(events, fault, httpx.Response(202)))

    await engage.push_balances(rows(1))

    assert events == ["limiter", "request", "limiter", "request"]


async def test_persistent_throttling_gives_up_after_the_configured_attempts(
    api, engage, events
) -> None:
    push = api.post(PUSH_V3).mock(return_value=httpx.Response(429))

    with pytest.raises(Retryable) as caught:
        await engage.push_balances(rows(1))

    assert caught.value.status == 429
    assert push.call_count == 4  # HTTP_MAX_ATTEMPTS
    assert events.count("limiter") == 4


@pytest.mark.parametrize("status", [400, 401])
async def test_rejected_push_is_not_retried(api, engage, events, status) -> None:
    push = api.post(PUSH_V3).mock(
        return_value=json_response(status, {"message": "too many items"})
    )

    with pytest.raises(Rejected) as caught:
        await engage.push_balances(rows(2))

    assert caught.value.status == status
    assert "too many items" in str(caught.value)
    assert push.call_count == 1
    assert events == ["limiter"]


async def test_the_shared_limiter_paces_successive_pushes(
    api, make_engage, redis, sleeps: SleepRecorder
) -> None:
    limiter = SharedRateLimiter(redis, "pointsync:engage-rate", 1.0, headroom=1.0)
    engage = make_engage(limiter=limiter)
    push = api.post(PUSH_V3).mock(return_value=httpx.Response(202))

    await engage.push_balances(rows(1))
    await engage.push_balances(rows(1))

    assert push.call_count == 2
    assert len(sleeps.delays) == 1  # the first slot was free, the second one a second later
    assert 0.75 < sleeps.delays[0] <= 1.0


# -- reads --------------------------------------------------------------------------------


async def test_get_balance_reads_our_definition(api, engage, events) -> None:
    read = api.get(READ_V3).mock(return_value=json_response(200, {
        "items": [
            {"id": 990, "contactId": "c1", "definitionId": 2, "balance": 5},
            {"id": 991, "contactId": "c1", "definitionId": 1, "balance": 1275.5,
             "pendingPoints": 0, "balanceExpires": None},
        ],
        "totalCount": 2, "offset": 0, "count": 2,
    }))

    balance = await engage.get_balance("6c1e-c1")

    assert balance == Decimal("1275.5")
    assert read.calls[0].request.url.params["contactId"] == "6c1e-c1"
    assert events == ["limiter"]


@pytest.mark.parametrize(
    "answer",
    [
        json_response(200, {"items": [], "totalCount": 0, "offset": 0, "count": 0}),
        json_response(200, {"items": [{"definitionId": 2, "balance": 5}]}),
        httpx.Response(404),
    ],
    ids=["no-items", "other-definition", "404"],
)
async def test_get_balance_without_our_account_is_none(api, engage, answer) -> None:
    api.get(READ_V3).mock(return_value=answer)

    assert await engage.get_balance("c1") is None
