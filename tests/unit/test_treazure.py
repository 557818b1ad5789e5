"""Treazure client: the shared token, the balances job and its faults, page parsing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import fakeredis
import httpx
import orjson
import pytest
import respx

from tests.support.unit import CLIENT_SECRET, TREAZURE, SleepRecorder, json_response, mocked_http
from worker.base.http import Rejected, RemoteError, Retryable
from worker.base.money import utc_micros
from worker.base.settings import Settings
from worker.systems.treazure import jobs as jobs_module
from worker.systems.treazure import parsing
from worker.systems.treazure.client import TreazureClient
from worker.systems.treazure.jobs import ForeignLink, JobTimeout
from worker.systems.treazure.parsing import BalanceEntry, MalformedEntry, parse_page
from worker.systems.treazure.token import SharedToken

TOKEN = "/identity/connect/token"
START_JOB = "/api/v1.0/LoyaltyVault/Balances/Get"
JOB_1 = "/api/v1.0/LoyaltyVault/Balances/Jobs/job-1"
JOB_2 = "/api/v1.0/LoyaltyVault/Balances/Jobs/job-2"
ACCOUNT = "/api/v1.0/LoyaltyVault/Account/6c1e0000-0000-0000-0000-000000000001"
CONTACT = "6c1e0000-0000-0000-0000-000000000001"

FROM = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
TO = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class ExactAmount:
    """Equal to any number whose shortest text is exactly this decimal (what JSON gets)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int | float | Decimal) and Decimal(str(other)) == Decimal(
            self.text)

    def __repr__(self) -> str:
        return f"ExactAmount({self.text})"


def parse_utc_micros(text: str) -> int:
    return utc_micros(datetime.fromisoformat(text))


def entry(contact_id: str, amount: str, at: str) -> BalanceEntry:
    """The entry a page row should become: exact cents and amount, the instant of `at`."""
    return BalanceEntry(contact_id, int(Decimal(amount).scaleb(2)), parse_utc_micros(at),
                        datetime.fromisoformat(at), ExactAmount(amount))


def G(short: str) -> str:
    """A GUID contact id ending in `short`, readable in assertions."""
    return f"00000000-0000-0000-0000-{short.encode().hex():0>12}"


def item(contact: str, balance: object, at: str = "2026-11-21T09:14:03Z",
         definition: str = "points") -> dict[str, object]:
    return {"accountNumber": contact, "loyaltyPointDefinitionId": definition,
            "balance": balance, "mutatedAt": at}


def page(items: list[dict[str, object]], next_href: str | None = None) -> httpx.Response:
    return json_response(200, {"items": items, "next": next_href})


def running(**headers: str) -> httpx.Response:
    return json_response(202, {"status": "Running"}, **headers)


def job_started(href: str) -> httpx.Response:
    return json_response(202, {"href": href})


def token_answer(token: str, expires_in: float = 3600) -> httpx.Response:
    return json_response(200, {"access_token": token, "token_type": "Bearer",
                               "expires_in": expires_in})


def numbered_tokens(expires_in: float = 3600) -> Callable[[httpx.Request], httpx.Response]:
    """A token endpoint that hands out tok-1, tok-2, … ."""
    count = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return token_answer(f"tok-{count}", expires_in)

    return answer


def bearer(route: respx.Route, index: int = -1) -> str:
    return route.calls[index].request.headers.get("Authorization", "")


async def collect(client: TreazureClient):
    return [p async for p in client.balance_pages(FROM, TO)]


def contacts(pages) -> list[list[str]]:
    return [[e.contact_id for e in good] for good, _ in pages]


@pytest.fixture
def api() -> respx.MockRouter:
    return respx.MockRouter(base_url=TREAZURE, assert_all_called=False)


@pytest.fixture
async def make_client(
    api: respx.MockRouter, redis_server: fakeredis.FakeServer, settings: Settings
) -> AsyncIterator[Callable[..., TreazureClient]]:
    """Build clients; each gets its own Redis connection to the one server (one process)."""
    opened: list[tuple[TreazureClient, fakeredis.FakeAsyncRedis]] = []

    def make(custom: Settings | None = None) -> TreazureClient:
        redis = fakeredis.FakeAsyncRedis(server=redis_server)
        client = TreazureClient(custom or settings, redis, http=mocked_http(api, TREAZURE))
        opened.append((client, redis))
        return client

    yield make
    for client, redis in opened:
        await client.aclose()
        await redis.aclose()


@pytest.fixture
def client(make_client: Callable[..., TreazureClient]) -> TreazureClient:
    return make_client()


@pytest.fixture
def tokens(api: respx.MockRouter) -> respx.Route:
    return api.post(TOKEN).mock(side_effect=numbered_tokens())


def account_answer(balance: object = 1275.5) -> httpx.Response:
    return json_response(200, {"accountNumber": CONTACT, "loyaltyPrograms": [
        {"loyaltyPointDefinitionId": "bonus", "balance": 5},
        {"loyaltyPointDefinitionId": "points", "balance": balance},
    ]})


# -- token --------------------------------------------------------------------------------


async def test_token_is_requested_form_encoded_and_sent_as_bearer(api, client, tokens) -> None:
    account = api.get(ACCOUNT).mock(return_value=account_answer())

    assert await client.get_balance(CONTACT) == Decimal("1275.5")

    token_request = tokens.calls[0].request
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(token_request.content.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["pointsync-client"],
        "client_secret": [CLIENT_SECRET],
        "scope": ["api_loyaltyvault"],
    }
    assert "Authorization" not in token_request.headers
    assert bearer(account) == "Bearer tok-1"


async def test_one_token_is_shared_by_every_process(api, make_client, tokens) -> None:
    account = api.get(ACCOUNT).mock(return_value=account_answer())
    first_process, second_process = make_client(), make_client()

    await first_process.get_balance(CONTACT)
    await second_process.get_balance(CONTACT)
    await first_process.get_balance(CONTACT)

    assert tokens.call_count == 1
    assert [bearer(account, i) for i in range(3)] == ["Bearer tok-1"] * 3


async def test_processes_starting_together_fetch_one_token(api, make_client) -> None:
    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # the others arrive while this fetch is in flight
        return token_answer("tok-shared")

    tokens = api.post(TOKEN).mock(side_effect=slow_token)
    account = api.get(ACCOUNT).mock(return_value=account_answer())
    processes = [make_client() for _ in range(5)]

    await asyncio.gather(*(p.get_balance(CONTACT) for p in processes))

    assert tokens.call_count == 1
    assert {bearer(account, i) for i in range(5)} == {"Bearer tok-shared"}


@pytest.mark.parametrize(
    ("expires_in", "margin", "fetches"),
    [(3600, 300, 1), (90, 60, 1), (30, 60, 2)],
)
async def test_token_is_renewed_within_the_margin_of_its_expiry(
    api, make_client, make_settings, expires_in, margin, fetches
) -> None:
    tokens = api.post(TOKEN).mock(side_effect=numbered_tokens(expires_in))
    account = api.get(ACCOUNT).mock(return_value=account_answer())
    client = make_client(make_settings(TREAZURE_TOKEN_MARGIN_SECONDS=margin))

    await client.get_balance(CONTACT)
    await client.get_balance(CONTACT)

    assert tokens.call_count == fetches
    assert bearer(account) == f"Bearer tok-{fetches}"


async def test_401_fetches_one_new_token_and_repeats_the_request(api, client, tokens) -> None:
    answers = iter([json_response(401, {"error": "invalid_token"}), account_answer(10)])
    sent_with: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        # Read the header as sent: the client may reuse the request object for the repeat.
        sent_with.append(request.headers.get("Authorization", ""))
        return next(answers)

    api.get(ACCOUNT).mock(side_effect=answer)

    assert await client.get_balance(CONTACT) == Decimal(10)

    assert tokens.call_count == 2
    assert sent_with == ["Bearer tok-1", "Bearer tok-2"]
    # The new token is the shared one now: no further fetch.
    assert await client.token.get() == "tok-2"
    assert tokens.call_count == 2


async def test_401_twice_is_rejected(api, client, tokens) -> None:
    account = api.get(ACCOUNT).mock(return_value=httpx.Response(401))

    with pytest.raises(Rejected) as caught:
        await client.get_balance(CONTACT)

    assert caught.value.status == 401
    assert tokens.call_count == 2
    assert account.call_count == 2


async def test_invalidate_keeps_a_newer_token_another_process_stored(redis) -> None:
    fetched: list[str] = []

    async def fetch() -> tuple[str, float]:
        fetched.append(f"tok-{len(fetched) + 1}")
        return fetched[-1], 3600

    mine = SharedToken(redis, fetch, namespace="ns", margin_seconds=60)
    theirs = SharedToken(redis, fetch, namespace="ns", margin_seconds=60)
    assert await mine.get() == "tok-1"
    await theirs.invalidate("tok-1")
    assert await theirs.get() == "tok-2"

    # `mine` saw tok-1 fail too, but tok-2 is newer: it must survive.
    await mine.invalidate("tok-1")

    assert await mine.get() == "tok-2"
    assert fetched == ["tok-1", "tok-2"]


@pytest.mark.parametrize(
    "answer",
    [
        json_response(400, {"error": "invalid_client"}),
        json_response(401, {"error": "invalid_client",
                            "error_description": "client authentication failed"}),
        httpx.Response(503, text="token service down"),
    ],
)
async def test_client_secret_never_appears_in_an_error(api, client, answer) -> None:
    tokens = api.post(TOKEN).mock(return_value=answer)

    with pytest.raises(RemoteError) as caught:
        await client.get_balance(CONTACT)

    assert tokens.called
    error: BaseException | None = caught.value
    while error is not None:  # the whole chain a traceback would print
        assert CLIENT_SECRET not in str(error)
        assert CLIENT_SECRET not in repr(error)
        error = error.__cause__ or error.__context__


async def test_token_answer_without_access_token_is_rejected(api, client) -> None:
    api.post(TOKEN).mock(return_value=json_response(200, {"token_type": "Bearer"}))

    with pytest.raises(Rejected, match="access_token"):
        await client.get_balance(CONTACT)


async def test_token_fetch_is_retried_after_a_connect_error(api, client) -> None:
    tokens = api.post(TOKEN).mock(side_effect=[httpx.ConnectError("refused"), token_answer("t")])
    api.get(ACCOUNT).mock(return_value=account_answer())

    assert await client.get_balance(CONTACT) == Decimal("1275.5")
    assert tokens.call_count == 2


# -- balances job -------------------------------------------------------------------------


async def test_job_is_polled_with_retry_after_then_pages_are_followed(
    api, client, tokens, sleeps: SleepRecorder
) -> None:
    start = api.post(START_JOB).mock(return_value=job_started(JOB_1))
    page_two = api.get(f"{JOB_1}/result", params={"page": "2"}).mock(
        return_value=page([item(G("c3"), "3")])
    )
    result = api.get(f"{JOB_1}/result").mock(side_effect=[
        running(**{"Retry-After": "3"}),
        page([item(G("c1"), 1250.5), item(G("c2"), -0.05, "2026-11-21T09:15:00Z")],
             f"{JOB_1}/result?page=2"),
    ])

    pages = await collect(client)

    assert sleeps.delays == [3.0]
    assert result.call_count == 2
    assert page_two.call_count == 1
    assert pages[0] == ([
        entry(G("c1"), "1250.5", "2026-11-21T09:14:03Z"),
        entry(G("c2"), "-0.05", "2026-11-21T09:15:00Z"),
    ], [])
    assert contacts(pages) == [[G("c1"), G("c2")], [G("c3")]]

    request = start.calls[0].request
    assert orjson.loads(request.content) == {
        "mutatedFrom": "2026-11-21T08:00:00Z",
        "mutatedTo": "2026-11-21T12:00:00Z",
        "loyaltyPointDefinitionId": "points",
    }
    assert request.headers["Content-Type"] == "application/json"
    for route in (start, result, page_two):
        assert bearer(route) == "Bearer tok-1"
    assert tokens.call_count == 1


async def test_job_without_retry_after_is_polled_with_growing_pauses(
    api, client, tokens, sleeps: SleepRecorder
) -> None:
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(
        side_effect=[running(), running(), running(), page([item(G("c1"), 1)])]
    )

    pages = await collect(client)

    assert contacts(pages) == [[G("c1")]]
    assert sleeps.delays == pytest.approx([0.2, 0.4, 0.8])


async def test_job_that_never_finishes_times_out(api, make_client, make_settings, tokens) -> None:
    client = make_client(make_settings(TREAZURE_JOB_TIMEOUT_SECONDS=0.05))
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    result = api.get(f"{JOB_1}/result").mock(return_value=running())

    with pytest.raises(JobTimeout) as caught:
        await collect(client)

    assert caught.value.service == "treazure"
    assert JOB_1 in str(caught.value)
    assert result.call_count >= 2


async def test_retry_after_longer_than_the_job_budget_is_cut_to_the_budget(
    api, make_client, make_settings, tokens, monkeypatch
) -> None:
    real_sleep = asyncio.sleep
    asked: list[float] = []

    async def bounded_sleep(delay: float) -> None:
        asked.append(delay)
        await real_sleep(min(delay, 0.2))

    monkeypatch.setattr(asyncio, "sleep", bounded_sleep)
    client = make_client(make_settings(TREAZURE_JOB_TIMEOUT_SECONDS=0.05))
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(return_value=running(**{"Retry-After": "30"}))

    with pytest.raises(JobTimeout):
        await collect(client)

    assert asked
    assert max(asked) <= 0.05


async def test_duplicates_malformed_and_foreign_items_in_a_job(api, client, tokens) -> None:
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(return_value=page([
        item(G("c1"), 10, "2026-11-21T09:00:00Z"),
        item(G("c1"), 12, "2026-11-21T10:00:00Z"),
        item(G("c2"), "12.345"),
        item(G("c3"), 99, definition="bonus"),
        item(G("c4"), 4),
    ]))

    [(good, bad)] = await collect(client)

    assert [(e.contact_id, e.cents) for e in good] == [
        (G("c1"), 1000), (G("c1"), 1200), (G("c4"), 400)
    ]
    assert [m.contact_id for m in bad] == [G("c2")]
    assert "12.345" in bad[0].reason


async def test_expired_result_restarts_the_job_once_from_the_start(api, client, tokens) -> None:
    start = api.post(START_JOB).mock(side_effect=[job_started(JOB_1), job_started(JOB_2)])
    api.get(f"{JOB_1}/result", params={"page": "2"}).mock(
        return_value=json_response(410, {"error": "ResultExpired"})
    )
    api.get(f"{JOB_1}/result").mock(return_value=page([item(G("a1"), 1)], f"{JOB_1}/result?page=2"))
    api.get(f"{JOB_2}/result", params={"page": "2"}).mock(return_value=page([item(G("b2"), 2)]))
    api.get(f"{JOB_2}/result").mock(return_value=page([item(G("b1"), 1)], f"{JOB_2}/result?page=2"))

    pages = await collect(client)

    assert start.call_count == 2
    assert contacts(pages) == [[G("a1")], [G("b1")], [G("b2")]]


async def test_second_expired_result_is_rejected(api, client, tokens) -> None:
    start = api.post(START_JOB).mock(side_effect=[job_started(JOB_1), job_started(JOB_2),
                                                  job_started(JOB_1)])
    api.get(f"{JOB_1}/result").mock(return_value=httpx.Response(410))
    api.get(f"{JOB_2}/result").mock(return_value=httpx.Response(410))

    with pytest.raises(Rejected) as caught:
        await collect(client)

    assert caught.value.status == 410
    assert start.call_count == 2


async def test_unknown_job_is_rejected_without_restart(api, client, tokens) -> None:
    start = api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(return_value=json_response(404, {"error": "UnknownJob"}))

    with pytest.raises(Rejected, match="UnknownJob"):
        await collect(client)

    assert start.call_count == 1


async def test_a_garbled_success_body_is_retried(api, client, tokens) -> None:
    """A proxy's HTML page under a 2xx is not Treazure's answer: ask again."""
    start = api.post(START_JOB).mock(side_effect=[
        httpx.Response(202, text="<html>gateway</html>"), job_started(JOB_1),
    ])
    api.get(f"{JOB_1}/result").mock(return_value=page([item(G("c1"), 1)]))

    assert contacts(await collect(client)) == [[G("c1")]]
    assert start.call_count == 2


@pytest.mark.parametrize(
    "fault",
    [
        httpx.Response(503, text="busy"),
        httpx.Response(500),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("slow"),
    ],
    ids=["503", "500", "429", "connect-error", "read-timeout"],
)
async def test_transient_faults_are_retried(api, client, tokens, fault) -> None:
    start = api.post(START_JOB).mock(side_effect=[fault, job_started(JOB_1)])
    # The page-2 route first: the plain one matches any query string.
    second = api.get(f"{JOB_1}/result", params={"page": "2"}).mock(
        side_effect=[fault, page([item(G("c2"), 2)])]
    )
    result = api.get(f"{JOB_1}/result").mock(
        side_effect=[fault, page([item(G("c1"), 1)], f"{JOB_1}/result?page=2")]
    )

    pages = await collect(client)

    assert contacts(pages) == [[G("c1")], [G("c2")]]
    assert (start.call_count, result.call_count, second.call_count) == (2, 2, 2)


async def test_429_retry_after_is_honoured(
    api, make_client, make_settings, tokens, sleeps: SleepRecorder
) -> None:
    client = make_client(make_settings(HTTP_MAX_BACKOFF_SECONDS=60))
    start = api.post(START_JOB).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "2"}), job_started(JOB_1)
    ])
    api.get(f"{JOB_1}/result").mock(return_value=page([item(G("c1"), 1)]))

    await collect(client)

    assert start.call_count == 2
    assert sleeps.delays == [2.0]


async def test_persistent_5xx_gives_up_after_the_configured_attempts(api, client, tokens) -> None:
    start = api.post(START_JOB).mock(return_value=httpx.Response(502, text="bad gateway"))

    with pytest.raises(Retryable) as caught:
        await collect(client)

    assert caught.value.status == 502
    assert start.call_count == 4  # HTTP_MAX_ATTEMPTS


@pytest.mark.parametrize("status", [400, 403, 422])
async def test_other_4xx_fails_at_once_with_treazures_reason(api, client, tokens, status) -> None:
    start = api.post(START_JOB).mock(
        return_value=json_response(status, {"error": "mutatedFrom must be before mutatedTo"})
    )

    with pytest.raises(Rejected) as caught:
        await collect(client)

    assert start.call_count == 1
    assert caught.value.status == status
    assert "mutatedFrom must be before mutatedTo" in str(caught.value)


async def test_html_error_body_is_summarised(api, client, tokens) -> None:
    api.post(START_JOB).mock(return_value=httpx.Response(400, html=(
        "<html><head><title>400 Bad Request</title><body><h1>Request rejected</h1>"
        "<p>Your request was blocked by the gateway.</p></body></html>"
    )))

    with pytest.raises(Rejected) as caught:
        await collect(client)

    message = str(caught.value)
    assert "<" not in message
    assert "Request rejected" in message
    assert "blocked by the gateway" in message


async def test_job_answer_without_href_is_rejected(api, client, tokens) -> None:
    api.post(START_JOB).mock(return_value=json_response(202, {"id": "job-1"}))

    with pytest.raises(Rejected, match="href"):
        await collect(client)


async def test_window_is_sent_in_utc_whatever_offset_it_was_given(api, client, tokens) -> None:
    # `sync --since 2026-11-21T10:00:00+02:00` is 08:00 UTC.
    plus_two = timezone(timedelta(hours=2))
    start = api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(return_value=page([]))

    [p async for p in client.balance_pages(
        datetime(2026, 11, 21, 10, 0, tzinfo=plus_two),
        datetime(2026, 11, 21, 14, 0, tzinfo=plus_two),
    )]

    body = orjson.loads(start.calls[0].request.content)
    assert body["mutatedFrom"] == "2026-11-21T08:00:00Z"
    assert body["mutatedTo"] == "2026-11-21T12:00:00Z"


# -- one account --------------------------------------------------------------------------


async def test_get_balance_of_unknown_account_is_none(api, client, tokens) -> None:
    api.get(ACCOUNT).mock(return_value=httpx.Response(404))

    assert await client.get_balance(CONTACT) is None


async def test_get_balance_without_our_program_is_none(api, client, tokens) -> None:
    api.get(ACCOUNT).mock(return_value=json_response(200, {
        "accountNumber": CONTACT,
        "loyaltyPrograms": [{"loyaltyPointDefinitionId": "bonus", "balance": 5}],
    }))

    assert await client.get_balance(CONTACT) is None


# -- page parsing -------------------------------------------------------------------------


def _raw(items: object, next_href: str | None = None) -> bytes:
    return orjson.dumps({"items": items, "next": next_href})


def test_parse_page_reads_exact_cents_and_times() -> None:
    good, bad, _ = parse_page(_raw([
        item(G("c1"), 1250.5, "2026-11-21T09:14:03Z"),
        item(G("c2"), 0.29, "2026-11-21T09:14:03.5Z"),
    ]), "points")

    assert bad == []
    assert good == [
        entry(G("c1"), "1250.5", "2026-11-21T09:14:03Z"),
        entry(G("c2"), "0.29", "2026-11-21T09:14:03.5Z"),
    ]
    assert good[1].mutated_us == parse_utc_micros("2026-11-21T09:14:03Z") + 500_000
    assert [(e.cents, str(e.amount)) for e in good] == [
        (125050, "1250.5"), (29, "0.29"),
    ]


def test_parse_page_passes_duplicates_through_in_order() -> None:
    good, _, _ = parse_page(_raw([
        item(G("c1"), 2, "2026-11-21T10:00:00Z"),
        item(G("c1"), 1, "2026-11-21T09:00:00Z"),
    ]), "points")

    assert [(e.contact_id, e.cents) for e in good] == [(G("c1"), 200), (G("c1"), 100)]


def test_parse_page_skips_other_programs_but_accepts_rows_without_one() -> None:
    no_definition = {"accountNumber": G("c3"), "balance": 3, "mutatedAt": "2026-11-21T09:00:00Z"}

    good, bad, _ = parse_page(_raw([
        item(G("c1"), 1, definition="bonus"), item(G("c2"), 2), no_definition,
    ]), "points")

    assert [e.contact_id for e in good] == [G("c2"), G("c3")]
    assert bad == []


@pytest.mark.parametrize(
    ("row", "who"),
    [
        (item(G("c1"), "12.345"), G("c1")),
        (item(G("c1"), True), G("c1")),
        (item(G("c1"), None), G("c1")),
        (item(G("c1"), 1, "2026-11-21T09:14:03"), G("c1")),
        (item(G("c1"), 1, "yesterday"), G("c1")),
        ({"accountNumber": G("c1"), "balance": 1}, G("c1")),
        ({"accountNumber": G("c1"), "mutatedAt": "2026-11-21T09:14:03Z"}, G("c1")),
        ({"balance": 1, "mutatedAt": "2026-11-21T09:14:03Z"}, "?"),
        ("not an object", "?"),
        (None, "?"),
    ],
)
def test_parse_page_returns_malformed_rows_instead_of_dropping_them(row, who) -> None:
    good, bad, _ = parse_page(_raw([item(G("ok1"), 1), row, item(G("ok2"), 2)]), "points")

    assert [e.contact_id for e in good] == [G("ok1"), G("ok2")]
    assert len(bad) == 1
    assert isinstance(bad[0], MalformedEntry)
    assert bad[0].contact_id == who
    assert bad[0].reason.startswith("malformed entry")


@pytest.mark.parametrize("account", [None, "", 12345, [G("c1")]])
def test_parse_page_refuses_an_account_number_that_is_not_an_id(account) -> None:
    row = item("placeholder", 1)
    row["accountNumber"] = account

    good, bad, _ = parse_page(_raw([row]), "points")

    assert good == []
    assert len(bad) == 1


@pytest.mark.parametrize("raw", [b"{}", b'{"items": null, "next": null}', _raw([])])
def test_parse_empty_page(raw: bytes) -> None:
    assert parse_page(raw, "points") == ([], [], None)


# -- links to other hosts -----------------------------------------------------------------

TREAZURE_ORIGIN = ("https", "acme.posengine.test.cloud", None)


def origins(api: respx.MockRouter) -> set[tuple[str, str, int | None]]:
    return {(c.request.url.scheme, c.request.url.host, c.request.url.port) for c in api.calls}


@pytest.mark.parametrize(("link", "named"), [
    (f"https://evil.example{JOB_1}/result?page=2", "https://evil.example"),
    ("//evil.example/collect?page=2", "https://evil.example"),
    (f"http://acme.posengine.test.cloud{JOB_1}/result?page=2",
     "http://acme.posengine.test.cloud"),
    (f"https://acme.posengine.test.cloud:8443{JOB_1}/result?page=2",
     "https://acme.posengine.test.cloud:8443"),
])
async def test_a_next_link_to_another_host_is_refused_and_not_requested(
    api, client, tokens, link: str, named: str
) -> None:
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result").mock(return_value=page([item(G("c1"), 1)], link))

    with pytest.raises(ForeignLink) as caught:
        await collect(client)

    assert named in str(caught.value) and "not followed" in str(caught.value)
    assert origins(api) == {TREAZURE_ORIGIN}


async def test_a_job_href_to_another_host_is_refused_and_not_requested(
    api, client, tokens
) -> None:
    api.post(START_JOB).mock(return_value=job_started("//evil.example/jobs/job-1"))

    with pytest.raises(ForeignLink) as caught:
        await collect(client)

    assert "https://evil.example" in str(caught.value)
    assert origins(api) == {TREAZURE_ORIGIN}


async def test_a_next_link_naming_treazures_own_host_is_followed(api, client, tokens) -> None:
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    api.get(f"{JOB_1}/result", params={"page": "2"}).mock(return_value=page([item(G("c2"), 2)]))
    api.get(f"{JOB_1}/result").mock(
        return_value=page([item(G("c1"), 1)], f"{TREAZURE}{JOB_1}/result?page=2"))

    assert contacts(await collect(client)) == [[G("c1")], [G("c2")]]
    assert origins(api) == {TREAZURE_ORIGIN}


# -- the page's rows a column at a time ---------------------------------------------------


def _items(rows: list[dict[str, object]]) -> list[Any]:
    page = parsing._decode_page(_raw(rows))
    return page.items or []


def _usual_rows(count: int) -> list[dict[str, object]]:
    """Rows as Treazure sends most of them: GUIDs, two-decimal floats, ints, UTC times with
    and without fractions, some without a program."""
    rows = []
    for n in range(count):
        balance: object = [1250.5, 0.29, 7, -3.1, 0.0, 99999999.99][n % 6]
        at = ["2026-11-21T09:14:03Z", "2026-11-21T09:14:03.123Z", "2026-11-21T10:14:03+01:00"][
            n % 3]
        row = item(G(f"r{n}"), balance, at)
        if n % 4 == 0:
            del row["loyaltyPointDefinitionId"]
        rows.append(row)
    return rows


def test_a_usual_page_is_read_a_column_at_a_time_with_the_rows_result() -> None:
    items = _items(_usual_rows(60))

    at_once = parsing._rows_at_once(items, "points")

    assert at_once is not None  # the column path took the page
    assert at_once == parsing._rows_one_by_one(items, "points")[0]
    assert [type(e.amount) for e in at_once[:3]] == [float, float, int]
    assert parse_page(_raw(_usual_rows(60)), "points") == (at_once, [], None)


@pytest.mark.parametrize(
    "odd_row",
    [
        item(G("odd"), 1, definition="bonus"),  # another program's row: skipped
        item(G("odd"), "12.50"),  # decimal text: read by money.cents_from_json
        item(G("odd"), 1.005),  # three decimals: malformed
        item(G("odd"), 1e13),  # beyond the exact float range: read through Decimal
        item(G("odd"), -1e13),
        item("5eed0000x0000-4000-8000-000000000000", 1),  # not shaped like a GUID
        item("5eed0000-0000-4000-8000-0000000000000", 1),  # 37 characters
    ],
)
def test_a_page_the_column_pass_cannot_vouch_for_is_read_row_by_row(odd_row) -> None:
    rows = [*_usual_rows(10), odd_row, *_usual_rows(5)]
    items = _items(rows)

    assert parsing._rows_at_once(items, "points") is None
    good, bad = parsing._rows_one_by_one(items, "points")
    assert parse_page(_raw(rows), "points") == (good, bad, None)
    assert len(good) + len(bad) in (15, 16)


def test_page_rows_build_their_entries_only_when_asked() -> None:
    good, _, _ = parse_page(_raw(_usual_rows(6)), "points")
    assert isinstance(good, parsing.PageRows) and good._entries is None

    assert good.keys() == [(e.contact_id, e.cents, e.mutated_us) for e in good.entries()]
    some = parsing.PageRows(good.contact_ids, good.cents, good.micros,
                            [e.mutated_at for e in good], [e.amount for e in good])
    assert some.at([4, 1]) == [good[4], good[1]] and some._entries is None
    assert len(some) == 6 and some == good and some == list(good) and some != good[:5]


def test_page_rows_of_built_rows_keep_them() -> None:
    built = [entry(G("c1"), "1.5", "2026-11-21T09:14:03Z"),
             entry(G("c2"), "2", "2026-11-21T09:14:04Z")]
    rows = parsing.PageRows.of(built)
    assert rows.entries() is built and rows.at([1]) == [built[1]]
    assert rows.keys() == [(G("c1"), 150, built[0].mutated_us), (G("c2"), 200,
                                                                built[1].mutated_us)]
    assert parsing.PageRows.of([]) == [] and len(parsing.PageRows.of([])) == 0


async def test_the_next_page_is_requested_before_this_one_is_parsed(
    api, client, tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Treazure works on the next page while this one is parsed: the request task must have
    run up to its send before the parse takes the event loop."""
    api.post(START_JOB).mock(return_value=job_started(JOB_1))
    second = api.get(f"{JOB_1}/result", params={"page": "2"}).mock(
        return_value=page([item(G("c2"), 2)]))
    api.get(f"{JOB_1}/result").mock(
        return_value=page([item(G("c1"), 1)], f"{JOB_1}/result?page=2"))
    second_requested_at_parse: list[int] = []
    parse = jobs_module.parse_page

    def spy(raw: bytes, loyalty_id: str):  # type: ignore[no-untyped-def]
        second_requested_at_parse.append(second.call_count)
        return parse(raw, loyalty_id)

    monkeypatch.setattr(jobs_module, "parse_page", spy)

    assert contacts(await collect(client)) == [[G("c1")], [G("c2")]]
    assert second_requested_at_parse == [1, 1]
