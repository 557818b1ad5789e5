"""Contlo client against a respx stand-in: the track call as the contract words it, each
answer class with Contlo's own message, and the shared rate limit."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import httpx
import orjson
import pytest
import respx

from tests.support.unit import RecordingLimiter, SleepRecorder, mocked_http
from worker.base.http import Ambiguous, Rejected, Retryable
from worker.base.ratelimit import SharedRateLimiter
from worker.base.settings import Settings
from worker.systems.contlo.client import ContloClient

BASE = "https://api.contlo.test"
KEY = "ctl-K3Y-90f1aa"
TRACK = f"{BASE}/v1/track"
PROFILE = {"name": "Asha Rao", "tier": "Gold"}
PROPERTIES = {"wallet_coin_amount": 50, "reward_title": "Order reward"}


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def api() -> respx.MockRouter:
    return respx.MockRouter(base_url=BASE, assert_all_called=False)


@pytest.fixture
def relay_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(NECTOR_WEBHOOK_SECRET="nector-secret", CONTLO_API_KEY=KEY,
                         CONTLO_BASE_URL=BASE)


@pytest.fixture
def make_contlo(api, relay_settings, events) -> Callable[..., ContloClient]:
    def make(limiter: object | None = None) -> ContloClient:
        return ContloClient(relay_settings, limiter or RecordingLimiter(events),  # type: ignore[arg-type]
                            http=mocked_http(api, BASE))
    return make


@pytest.fixture
def contlo(make_contlo) -> ContloClient:
    return make_contlo()


def answer(api: respx.MockRouter, response: httpx.Response | Exception,
           events: list[str] | None = None) -> respx.Route:
    def respond(request: httpx.Request) -> httpx.Response:
        if events is not None:
            events.append("request")
        if isinstance(response, Exception):
            raise response
        return response
    return api.post("/v1/track").mock(side_effect=respond)


async def track(contlo: ContloClient, email: str | None = "asha@example.in",
                phone: str | None = "+919800000000") -> None:
    await contlo.track("Wallet Coins Rewarded", email, phone, PROPERTIES, PROFILE)


async def test_track_posts_the_contract_body_and_headers(api, contlo, events) -> None:
    route = answer(api, httpx.Response(200, json={"success": True}), events)

    await track(contlo)

    request = route.calls.last.request
    assert str(request.url) == TRACK
    assert request.headers["X-API-KEY"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert orjson.loads(request.content) == {
        "event": "Wallet Coins Rewarded", "email": "asha@example.in",
        "phone_number": "+919800000000", "properties": PROPERTIES,
        "profile_properties": PROFILE}
    assert events == ["limiter", "request"]


async def test_a_missing_email_or_phone_is_left_out(api, contlo) -> None:
    route = answer(api, httpx.Response(200, json={"success": True}))

    await track(contlo, email=None)
    await track(contlo, phone=None)

    first, second = (orjson.loads(call.request.content) for call in route.calls)
    assert "email" not in first and first["phone_number"] == "+919800000000"
    assert "phone_number" not in second and second["email"] == "asha@example.in"


async def test_a_400_is_rejected_with_contlo_message(api, contlo) -> None:
    answer(api, httpx.Response(400, json={"success": False,
                                          "message": "email or phone_number is required"}))

    with pytest.raises(Rejected) as caught:
        await track(contlo)

    assert caught.value.status == 400
    assert "email or phone_number is required" in caught.value.reason


async def test_a_401_is_rejected_and_never_shows_the_key(api, contlo) -> None:
    answer(api, httpx.Response(401, json={"success": False, "message": "Unauthorized"}))

    with pytest.raises(Rejected) as caught:
        await track(contlo)

    assert caught.value.status == 401
    assert KEY not in str(caught.value)


async def test_a_429_is_retryable_with_its_retry_after(api, contlo) -> None:
    answer(api, httpx.Response(429, headers={"Retry-After": "2"}))

    with pytest.raises(Retryable) as caught:
        await track(contlo)

    assert caught.value.status == 429 and caught.value.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_5xx_is_retryable_not_ambiguous(api, contlo, status) -> None:
    answer(api, httpx.Response(status))

    with pytest.raises(Retryable) as caught:
        await track(contlo)

    assert not isinstance(caught.value, Ambiguous)


async def test_a_connection_that_never_opened_is_retryable(api, contlo) -> None:
    answer(api, httpx.ConnectTimeout("no route"))

    with pytest.raises(Retryable):
        await track(contlo)


@pytest.mark.parametrize("lost", [httpx.ReadTimeout("slow"),
                                  httpx.RemoteProtocolError("reset after sending")])
async def test_a_lost_answer_is_ambiguous(api, contlo, lost) -> None:
    route = answer(api, lost)

    with pytest.raises(Ambiguous):
        await track(contlo)

    assert route.call_count == 1


async def test_the_shared_limiter_paces_every_process(
    api, make_contlo, redis_server, sleeps: SleepRecorder
) -> None:
    clients = [make_contlo(SharedRateLimiter(fakeredis.FakeAsyncRedis(server=redis_server),
                                             "pointsync:contlo-rate", 10.0, headroom=1.0))
               for _ in range(2)]
    route = answer(api, httpx.Response(200, json={"success": True}))

    for client in clients:
        await track(client)

    assert route.call_count == 2
    assert len(sleeps.delays) == 1
    assert 0.08 < sleeps.delays[0] <= 0.1


def test_the_relay_must_be_configured(settings: Settings) -> None:
    with pytest.raises(ValueError, match="CONTLO_API_KEY"):
        ContloClient(settings, RecordingLimiter([]))
