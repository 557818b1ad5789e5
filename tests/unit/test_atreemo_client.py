"""Atreemo client against a respx stand-in: Toggle's envelope forwarded byte for byte with a
signature Atreemo can verify, each answer class, and the shared rate limit."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import fakeredis
import httpx
import pytest
import respx

from sims.senders import toggle_event
from tests.support.unit import RecordingLimiter, SleepRecorder, mocked_http
from worker.base.http import Ambiguous, Rejected, Retryable
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.systems.atreemo.client import AtreemoClient

URL = "https://ingest.atreemo.test/toggle/acme"
SECRET = "atr-S1GN-5e7a01"
# Odd spacing and key order on purpose: a re-serialised body would differ.
BODY = (b'{"type": "card.balance_adjusted",  "id":570,"object":"event","data":{"object":'
        b'{"object":"balance_adjustment","id":9,"value":-500}},"created_at":'
        b'"2026-11-21T16:01:27.000000Z"}')


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def api() -> respx.MockRouter:
    return respx.MockRouter(assert_all_called=False)


@pytest.fixture
def relay_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(TOGGLE_WEBHOOK_SECRET="tg-hook-secret", ATREEMO_WEBHOOK_URL=URL,
                         ATREEMO_WEBHOOK_SECRET=SECRET)


@pytest.fixture
def make_atreemo(api, relay_settings, events) -> Callable[..., AtreemoClient]:
    def make(limiter: object | None = None) -> AtreemoClient:
        return AtreemoClient(relay_settings, limiter or RecordingLimiter(events),  # type: ignore[arg-type]
                             http=mocked_http(api, ""))
    return make


@pytest.fixture
def atreemo(make_atreemo) -> AtreemoClient:
    return make_atreemo()


def answer(api: respx.MockRouter, response: httpx.Response | Exception,
           events: list[str] | None = None) -> respx.Route:
    def respond(request: httpx.Request) -> httpx.Response:
        if events is not None:
            events.append("request")
        if isinstance(response, Exception):
            raise response
        return response
    return api.post(URL).mock(side_effect=respond)


async def test_the_envelope_goes_byte_for_byte_with_a_verifiable_signature(
    api, atreemo, events
) -> None:
    route = answer(api, httpx.Response(200, json={"ok": True}), events)

    await atreemo.deliver(BODY)

    request = route.calls.last.request
    assert request.content == BODY
    wanted = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert request.headers["Toggle-Signature"] == wanted  # lowercase hex
    assert request.headers["Content-Type"] == "application/json"
    assert events == ["limiter", "request"]


async def test_a_sender_built_event_is_forwarded_unchanged(api, atreemo) -> None:
    body = toggle_event("order.created", {"object": "order", "id": 5, "value": 1000})
    route = answer(api, httpx.Response(200))

    await atreemo.deliver(body)

    assert route.calls.last.request.content == body


async def test_a_400_is_refused_for_good_with_atreemo_reason(api, atreemo) -> None:
    answer(api, httpx.Response(400, json={"message": "unknown card 6301"}))

    with pytest.raises(Rejected) as caught:
        await atreemo.deliver(BODY)

    assert caught.value.status == 400
    assert "unknown card 6301" in caught.value.reason


async def test_a_401_is_rejected_and_never_shows_the_secret(api, atreemo) -> None:
    answer(api, httpx.Response(401, text="bad signature"))

    with pytest.raises(Rejected) as caught:
        await atreemo.deliver(BODY)

    assert caught.value.status == 401
    assert SECRET not in str(caught.value)


async def test_a_429_is_retryable_with_its_retry_after(api, atreemo) -> None:
    answer(api, httpx.Response(429, headers={"Retry-After": "3"}))

    with pytest.raises(Retryable) as caught:
        await atreemo.deliver(BODY)

    assert caught.value.status == 429 and caught.value.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_5xx_is_retryable_not_ambiguous(api, atreemo, status) -> None:
    answer(api, httpx.Response(status, text="oops"))

    with pytest.raises(Retryable) as caught:
        await atreemo.deliver(BODY)

    assert not isinstance(caught.value, Ambiguous)
    assert caught.value.status == status


async def test_a_connection_that_never_opened_is_retryable(api, atreemo) -> None:
    answer(api, httpx.ConnectError("refused"))

    with pytest.raises(Retryable):
        await atreemo.deliver(BODY)


@pytest.mark.parametrize("lost", [httpx.ReadTimeout("slow"),
                                  httpx.RemoteProtocolError("reset after sending"),
                                  httpx.ReadError("reset")])
async def test_a_lost_answer_is_ambiguous(api, atreemo, lost) -> None:
    route = answer(api, lost)

    with pytest.raises(Ambiguous):
        await atreemo.deliver(BODY)

    assert route.call_count == 1  # one attempt: the relay decides what happens next


async def test_the_shared_limiter_paces_every_process(
    api, make_atreemo, redis_server, sleeps: SleepRecorder
) -> None:
    first = make_atreemo(SharedRateLimiter(fakeredis.FakeAsyncRedis(server=redis_server),
                                           "pointsync:atreemo-rate", 20.0, headroom=1.0))
    second = make_atreemo(SharedRateLimiter(fakeredis.FakeAsyncRedis(server=redis_server),
                                            "pointsync:atreemo-rate", 20.0, headroom=1.0))
    route = answer(api, httpx.Response(200))

    await first.deliver(BODY)
    await second.deliver(BODY)

    assert route.call_count == 2
    assert len(sleeps.delays) == 1  # the second process waited for the next slot
    assert 0.03 < sleeps.delays[0] <= 0.05


def test_the_relay_must_be_configured(settings: Settings) -> None:
    with pytest.raises(ValueError, match="ATREEMO_WEBHOOK_URL"):
        AtreemoClient(settings, RecordingLimiter([]))
