"""Error classification, Retry-After, error bodies and the retry policy shared by both clients."""

from __future__ import annotations

import email.utils
import gc
import random
import ssl
import weakref
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
import respx

from tests.support.unit import SleepRecorder
from worker.base.http import (
    Ambiguous,
    BackoffWait,
    Rejected,
    Retryable,
    classify_response,
    error_detail,
    make_client,
    parse_retry_after,
    send,
    tls_context,
    with_retries,
)

BASE = "https://api.example.test"


@pytest.fixture
async def api() -> AsyncIterator[tuple[respx.MockRouter, httpx.AsyncClient]]:
    mock = respx.MockRouter(base_url=BASE)
    transport = httpx.MockTransport(mock.async_handler)
    async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:
        yield mock, client


async def _send(api: tuple[respx.MockRouter, httpx.AsyncClient], *, write: bool):
    _, client = api
    return await send(client, "svc", client.build_request("POST", "/thing"), write=write)


# -- transport failures -----------------------------------------------------------------


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
@pytest.mark.parametrize("write", [False, True])
async def test_request_that_never_left_is_retryable_even_for_a_write(api, error, write) -> None:
    mock, _ = api
    mock.post("/thing").mock(side_effect=error)

    with pytest.raises(Retryable) as caught:
        await _send(api, write=write)

    assert type(caught.value) is Retryable
    assert caught.value.service == "svc"
    assert caught.value.status is None


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
async def test_lost_answer_to_a_write_is_ambiguous(api, error) -> None:
    mock, _ = api
    mock.post("/thing").mock(side_effect=error)

    with pytest.raises(Ambiguous):
        await _send(api, write=True)


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_lost_answer_to_a_read_is_retryable(api, error) -> None:
    mock, _ = api
    mock.post("/thing").mock(side_effect=error)

    with pytest.raises(Retryable) as caught:
        await _send(api, write=False)

    assert type(caught.value) is Retryable


# -- status codes -----------------------------------------------------------------------


@pytest.mark.parametrize("write", [False, True])
async def test_429_is_retryable_with_its_retry_after(api, write) -> None:
    mock, _ = api
    mock.post("/thing").mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))

    with pytest.raises(Retryable) as caught:
        await _send(api, write=write)

    assert type(caught.value) is Retryable
    assert caught.value.status == 429
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_on_a_write_is_ambiguous(api, status) -> None:
    mock, _ = api
    mock.post("/thing").mock(return_value=httpx.Response(status, headers={"Retry-After": "3"}))

    with pytest.raises(Ambiguous) as caught:
        await _send(api, write=True)

    assert caught.value.status == status
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_on_a_read_is_retryable(api, status) -> None:
    mock, _ = api
    mock.post("/thing").mock(return_value=httpx.Response(status))

    with pytest.raises(Retryable) as caught:
        await _send(api, write=False)

    assert type(caught.value) is Retryable
    assert caught.value.status == status
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
@pytest.mark.parametrize("write", [False, True])
async def test_other_4xx_is_rejected(api, status, write) -> None:
    mock, _ = api
    mock.post("/thing").mock(
        return_value=httpx.Response(status, json={"error": "InsufficientBalance"})
    )

    with pytest.raises(Rejected) as caught:
        await _send(api, write=write)

    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert "InsufficientBalance" in str(caught.value)
    assert str(caught.value).startswith("svc: ")


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_success_is_returned(api, status) -> None:
    mock, _ = api
    mock.post("/thing").mock(return_value=httpx.Response(status))

    response = await _send(api, write=True)

    assert response.status_code == status


def test_classify_response_returns_for_success_and_raises_otherwise() -> None:
    classify_response("svc", httpx.Response(202))
    with pytest.raises(Rejected):
        classify_response("svc", httpx.Response(404))


# -- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"), [("5", 5.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0)]
)
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_http_date() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)  # "Thu, 15 Jan 2027 08:00:30 GMT"

    assert parse_retry_after(header, now=now) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    now = 1_800_000_000.0

    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2026", "12 seconds"])
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


# -- error bodies -----------------------------------------------------------------------


def test_error_detail_from_json() -> None:
    response = httpx.Response(422, json={"error": "InsufficientBalance", "traceId": "abc"})

    assert error_detail(response) == "InsufficientBalance"


def test_error_detail_from_json_message_field() -> None:
    response = httpx.Response(400, json={"message": "comment too long"})

    assert error_detail(response) == "comment too long"


def test_error_detail_from_plain_text() -> None:
    response = httpx.Response(503, text="  Service\n temporarily   unavailable\n")

    assert error_detail(response) == "Service temporarily unavailable"


def test_error_detail_from_html() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        "<body>\n<center><h1>Bad Gateway &amp; more</h1></center>\n<hr>nginx</body></html>"
    )
    detail = error_detail(httpx.Response(502, html=page))

    assert "<" not in detail and ">" not in detail
    assert "502 Bad Gateway" in detail
    assert "Bad Gateway & more" in detail
    assert "nginx" in detail


def test_error_detail_is_bounded() -> None:
    detail = error_detail(httpx.Response(500, text="x" * 10_000))

    assert detail == "x" * 200


def test_error_detail_of_empty_body_is_the_reason_phrase() -> None:
    assert error_detail(httpx.Response(503)) == "Service Unavailable"


def test_error_detail_of_a_json_list_is_its_text() -> None:
    assert error_detail(httpx.Response(400, json=["bad", "input"])) == '["bad","input"]'


# -- retry policy -----------------------------------------------------------------------


class Flaky:
    """A call that fails with the given errors, in order, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_with_retries_stops_after_the_given_attempts() -> None:
    call = Flaky(*[Retryable("svc", "down", 503) for _ in range(10)])

    with pytest.raises(Retryable):
        await with_retries(call, attempts=3, max_backoff=0.001)

    assert call.calls == 3


async def test_with_retries_returns_once_a_retry_succeeds() -> None:
    call = Flaky(Retryable("svc", "down", 503), Retryable("svc", "down", 503))

    assert await with_retries(call, attempts=3, max_backoff=0.001) == "ok"
    assert call.calls == 3


@pytest.mark.parametrize(
    "error", [Rejected("svc", "bad", 400), Ambiguous("svc", "maybe", 503), KeyError("x")]
)
async def test_with_retries_does_not_retry_other_errors(error: BaseException) -> None:
    call = Flaky(error)

    with pytest.raises(type(error)):
        await with_retries(call, attempts=5, max_backoff=0.001)

    assert call.calls == 1


async def test_with_retries_retries_the_classes_it_is_given() -> None:
    call = Flaky(Ambiguous("svc", "maybe", 503))

    assert await with_retries(
        call, attempts=2, max_backoff=0.001, retry_on=(Retryable, Ambiguous)
    ) == "ok"
    assert call.calls == 2


async def test_with_retries_waits_what_retry_after_asks(sleeps: SleepRecorder) -> None:
    call = Flaky(Retryable("svc", "throttled", 429, retry_after=4.0))

    await with_retries(call, attempts=2, max_backoff=60)

    assert sleeps.delays == [4.0]


async def test_with_retries_caps_retry_after_at_max_backoff(sleeps: SleepRecorder) -> None:
    call = Flaky(Retryable("svc", "throttled", 429, retry_after=3600.0))

    await with_retries(call, attempts=2, max_backoff=2.5)

    assert sleeps.delays == [2.5]


def _state(attempt: int, error: BaseException | None) -> SimpleNamespace:
    outcome = SimpleNamespace(exception=lambda: error)
    return SimpleNamespace(attempt_number=attempt, outcome=outcome)


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 10.0), (30, 10.0)]
)
def test_backoff_without_hint_is_capped_exponential_jitter(attempt: int, ceiling: float) -> None:
    wait = BackoffWait(initial=0.5, maximum=10.0)
    random.seed(1234)

    delays = [wait(_state(attempt, Retryable("svc", "x"))) for _ in range(200)]

    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered, not a constant


def test_backoff_prefers_the_hint() -> None:
    wait = BackoffWait(initial=0.5, maximum=10.0)

    assert wait(_state(1, Retryable("svc", "x", 429, retry_after=0.0))) == 0.0
    assert wait(_state(5, Retryable("svc", "x", 429, retry_after=3.0))) == 3.0
    assert wait(_state(1, Retryable("svc", "x", 429, retry_after=99.0))) == 10.0


# -- secrets in error bodies ----------------------------------------------------------------

ECHOED_SECRET = "tz-S3CRET-4f1d9c"  # tests.support.unit.CLIENT_SECRET, set by `env`


@pytest.mark.parametrize("body", [
    # An echoing proxy repeating the token request's form, a WAF page quoting the headers,
    # a JSON error quoting the configured secret on its own.
    {"content": f"bad request: grant_type=client_credentials&client_secret={ECHOED_SECRET}"},
    {"content": "<html><body><h1>Blocked</h1><pre>apikey: eng-K3Y-77ab20\n"
                "Authorization: Bearer eyJhbGciOi.pay-load.sig</pre></body></html>"},
    {"json": {"error": f"unknown client with secret {ECHOED_SECRET}"}},
])
def test_an_error_body_echoing_secrets_is_masked_where_the_error_is_made(
    env: pytest.MonkeyPatch, body: dict[str, object]
) -> None:
    response = httpx.Response(400, **body)  # type: ignore[arg-type]

    with pytest.raises(Rejected) as caught:
        classify_response("treazure", response)

    error = caught.value
    for text in (error.reason, str(error), repr(error.args)):
        assert ECHOED_SECRET not in text
        assert "eng-K3Y-77ab20" not in text and "eyJhbGciOi" not in text
        assert "***" in text


def test_masking_an_error_again_changes_nothing(env: pytest.MonkeyPatch) -> None:
    first = Rejected("treazure", f"HTTP 400: client_secret={ECHOED_SECRET}, Bearer abc.def")
    again = Rejected("treazure", first.reason)

    assert first.reason == "HTTP 400: client_secret=***, Bearer ***"
    assert again.reason == first.reason and str(again) == str(first)


async def test_a_sent_request_and_its_body_are_freed_without_the_garbage_collector() -> None:
    # httpx ties a read response to its stream in a cycle that held the request and its
    # body (150 KB for a push) until a full collection, which a long sync seldom runs.
    transport = httpx.MockTransport(lambda request: httpx.Response(202, json={"ok": True}))
    async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:
        request = client.build_request("POST", "/balances", content=b"x" * 150_000)
        gone = weakref.ref(request)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            response = await send(client, "engage", request, write=True)
            assert response.json() == {"ok": True}  # still readable
            del request, response
            assert gone() is None
        finally:
            if was_enabled:
                gc.enable()


async def test_clients_share_one_verifying_tls_context() -> None:
    # httpx built (and loaded the CA bundle into) a context per client, about 40 ms each.
    first = make_client("https://one.test", timeout=5, connect_timeout=1)
    second = make_client("http://two.test", timeout=5, connect_timeout=1)
    async with first, second:
        contexts = {id(client._transport._pool._ssl_context)  # type: ignore[attr-defined]
                    for client in (first, second)}
    assert contexts == {id(tls_context())}
    assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname
