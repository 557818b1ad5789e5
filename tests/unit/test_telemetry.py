"""Response counting: http.send tallies every answer and transport failure, telemetry moves
the tally to the shared Redis hash without losing or repeating counts, and runtime flushes
before a task's work returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest
import respx
from redis import exceptions as redis_errors

from tests.support.unit import ENGAGE, TREAZURE, json_response, mocked_http
from worker.base import telemetry
from worker.base.http import RESPONSES, Ambiguous, Rejected, Retryable, send
from worker.base.settings import Settings
from worker.base.telemetry import (
    RESPONSES_KEY,
    flush_responses,
    read_responses,
    take,
    try_flush,
)
from worker.faces import runtime
from worker.systems.engage.client import Balance, EngageClient
from worker.systems.treazure.client import TreazureClient

CONTACT = "6c1e0000-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def tally() -> Iterator[Counter[tuple[str, str]]]:
    """The process-wide tally, empty for the test and as it was afterwards."""
    saved = Counter(RESPONSES)
    RESPONSES.clear()
    yield RESPONSES
    RESPONSES.clear()
    RESPONSES.update(saved)


def shared(redis_server: fakeredis.FakeServer) -> dict[tuple[str, str], int]:
    """What the web process would read."""
    return read_responses(fakeredis.FakeRedis(server=redis_server))


# -- the tally and its flush ------------------------------------------------------------------


def test_take_empties_what_it_took() -> None:
    tally = Counter({("engage", "202"): 3, ("engage", "429"): 1})
    assert take(tally) == {("engage", "202"): 3, ("engage", "429"): 1}
    assert not tally
    assert take(tally) == {}


async def test_flushes_add_up_in_the_shared_hash(redis, redis_server, tally) -> None:
    tally.update({("engage", "202"): 5, ("engage", "429"): 2})
    assert await flush_responses(redis) == 7
    assert not tally
    tally.update({("engage", "202"): 1, ("treazure", "200"): 4})
    assert await flush_responses(redis) == 5

    assert await redis.hgetall(RESPONSES_KEY) == {
        b"engage:202": b"6", b"engage:429": b"2", b"treazure:200": b"4"}
    assert shared(redis_server) == {("engage", "202"): 6, ("engage", "429"): 2,
                              ("treazure", "200"): 4}


async def test_an_empty_tally_writes_nothing(redis) -> None:
    assert await flush_responses(redis) == 0
    assert await redis.exists(RESPONSES_KEY) == 0


async def test_processes_add_to_one_total(redis_server) -> None:
    first, second = Counter({("engage", "429"): 2}), Counter({("engage", "429"): 3})
    for tally in (first, second):
        client = fakeredis.FakeAsyncRedis(server=redis_server)
        await flush_responses(client, tally)
        await client.aclose()
    assert shared(redis_server) == {("engage", "429"): 5}


async def test_a_failed_flush_loses_nothing_and_counts_once_later(
    redis, redis_server, tally
) -> None:
    tally.update({("engage", "429"): 2, ("engage", "202"): 1})
    redis_server.connected = False
    with pytest.raises(redis_errors.ConnectionError):
        await flush_responses(redis)
    assert tally == Counter({("engage", "429"): 2, ("engage", "202"): 1})

    await try_flush(redis)  # still down: swallowed, still kept
    tally[("engage", "429")] += 1
    redis_server.connected = True
    await try_flush(redis)

    assert not tally
    assert shared(redis_server) == {("engage", "429"): 3, ("engage", "202"): 1}


class _PipelineMidFlight:
    """A pipeline during whose round trip another response is counted."""

    def __init__(self, real: Any, tally: Counter[tuple[str, str]], fail: bool) -> None:
        self.real, self.tally, self.fail = real, tally, fail

    def hincrby(self, *args: Any) -> None:
        self.real.hincrby(*args)

    async def execute(self) -> list[Any]:
        self.tally[("engage", "202")] += 1  # answered while the flush waits for Redis
        if self.fail:
            raise ConnectionError("gone")
        return await self.real.execute()


class _RedisMidFlight:
    def __init__(self, real: Any, tally: Counter[tuple[str, str]], fail: bool) -> None:
        self.real, self.tally, self.fail = real, tally, fail

    def pipeline(self, transaction: bool = True) -> _PipelineMidFlight:
        return _PipelineMidFlight(self.real.pipeline(transaction=transaction), self.tally,
                                  self.fail)


@pytest.mark.parametrize("fail", [False, True])
async def test_counts_made_during_a_flush_are_kept_once(redis, redis_server, tally, fail) -> None:
    tally[("engage", "202")] = 10
    mid_flight = _RedisMidFlight(redis, tally, fail)
    if fail:
        with pytest.raises(ConnectionError):
            await flush_responses(mid_flight)  # type: ignore[arg-type]
        assert tally == Counter({("engage", "202"): 11})
        assert shared(redis_server) == {}
    else:
        assert await flush_responses(mid_flight) == 10  # type: ignore[arg-type]
        assert tally == Counter({("engage", "202"): 1})
        assert shared(redis_server) == {("engage", "202"): 10}


def test_reading_ignores_fields_that_are_not_service_and_status(redis_server) -> None:
    sync = fakeredis.FakeRedis(server=redis_server)
    sync.hset(RESPONSES_KEY, mapping={"engage:429": 4, "junk": 1})
    assert read_responses(sync) == {("engage", "429"): 4}


# -- http.send counts every answer -------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[respx.MockRouter, httpx.AsyncClient]]:
    mock = respx.MockRouter(base_url="https://api.example.test")
    async with mocked_http(mock, "https://api.example.test") as client:
        yield mock, client


async def _send(api, *, write: bool = False) -> httpx.Response:
    _, client = api
    return await send(client, "engage", client.build_request("POST", "/thing"), write=write)


async def test_send_counts_successes_and_refusals_by_status(api, tally) -> None:
    mock, _ = api
    mock.post("/thing").mock(side_effect=[
        httpx.Response(202), httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(202), httpx.Response(400), httpx.Response(503)])

    await _send(api)
    with pytest.raises(Retryable):
        await _send(api)
    await _send(api)
    with pytest.raises(Rejected):
        await _send(api)
    with pytest.raises(Ambiguous):
        await _send(api, write=True)

    assert tally == Counter({("engage", "202"): 2, ("engage", "429"): 1,
                             ("engage", "400"): 1, ("engage", "503"): 1})


@pytest.mark.parametrize(("error", "status"), [
    (httpx.ConnectError, "connect_error"),
    (httpx.ConnectTimeout, "timeout"),
    (httpx.PoolTimeout, "timeout"),
    (httpx.ReadTimeout, "timeout"),
    (httpx.RemoteProtocolError, "dropped"),
    (httpx.ReadError, "dropped"),
    (httpx.WriteError, "dropped"),
])
async def test_send_counts_transport_failures(api, tally, error, status) -> None:
    mock, _ = api
    mock.post("/thing").mock(side_effect=error)
    with pytest.raises((Retryable, Ambiguous)):
        await _send(api)
    assert tally == Counter({("engage", status): 1})


# -- both clients go through send (the token request too) ----------------------------------------


async def test_every_treazure_request_is_counted_token_included(settings: Settings, tally) -> None:
    api = respx.MockRouter(base_url=TREAZURE, assert_all_called=False)
    api.post("/identity/connect/token").mock(
        return_value=json_response(200, {"access_token": "t", "expires_in": 3600}))
    api.get(f"/api/v1.0/LoyaltyVault/Account/{CONTACT}").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0"}),
        json_response(200, {"loyaltyPrograms": [
            {"loyaltyPointDefinitionId": "points", "balance": 5}]})])
    redis = fakeredis.FakeAsyncRedis()
    async with TreazureClient(settings, redis, http=mocked_http(api, TREAZURE)) as client:
        assert await client.get_balance(CONTACT) == Decimal(5)
    await redis.aclose()

    assert tally == Counter({("treazure", "200"): 2, ("treazure", "429"): 1})


class _NoLimit:
    async def acquire(self) -> None:
        return None


async def test_every_engage_request_is_counted_retries_included(settings: Settings, tally) -> None:
    api = respx.MockRouter(base_url=ENGAGE, assert_all_called=False)
    api.post("/api/v3/point-accounts/balances").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "0"}), httpx.ConnectError("refused"),
        json_response(202, {"transactionId": "x"})])
    async with EngageClient(settings, _NoLimit(), http=mocked_http(api, ENGAGE)) as engage:  # type: ignore[arg-type]
        await engage.push_balances([Balance(CONTACT, Decimal(1), "2026-11-21T09:14:03Z")])

    assert tally == Counter({("engage", "429"): 1, ("engage", "connect_error"): 1,
                             ("engage", "202"): 1})


# -- runtime flushes before a task's work returns --------------------------------------------


@pytest.fixture
def fake_runtime_redis(
    monkeypatch: pytest.MonkeyPatch, redis_server: fakeredis.FakeServer, settings: Settings
) -> Iterator[None]:
    """runtime.remote() on fakeredis; the process loop and clients are dropped afterwards."""

    class FakeRedisFactory:
        @staticmethod
        def from_url(url: str, **options: Any) -> fakeredis.FakeAsyncRedis:
            return fakeredis.FakeAsyncRedis(server=redis_server)

    monkeypatch.setattr(runtime, "Redis", FakeRedisFactory)
    monkeypatch.setattr(runtime, "_stores", {})
    runtime.forget_process_loop()
    yield
    if runtime._loop is not None and not runtime._loop.is_closed():
        runtime._discard_loop(runtime._loop)
    runtime.forget_process_loop()


async def _answered(parts: Any) -> str:
    RESPONSES[("engage", "429")] += 2  # as http.send counts them
    RESPONSES[("treazure", "200")] += 1
    return "done"


def test_a_task_s_responses_are_in_redis_when_its_work_returns(
    fake_runtime_redis, redis_server, tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "_last_flush", float("-inf"))  # a fresh process

    assert runtime.run_with_parts(_answered) == "done"
    assert shared(redis_server) == {("engage", "429"): 2, ("treazure", "200"): 1}
    assert not tally


def test_tasks_in_quick_succession_flush_at_most_once_a_second(
    fake_runtime_redis, redis_server, tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "_last_flush", float("-inf"))
    runtime.run_with_parts(_answered)
    runtime.run_with_parts(_answered)  # right after: no Redis round trip of its own

    assert shared(redis_server) == {("engage", "429"): 2, ("treazure", "200"): 1}
    assert tally == Counter({("engage", "429"): 2, ("treazure", "200"): 1})

    # A second later (moved back rather than waited for), the next task flushes it all.
    monkeypatch.setattr(telemetry, "_last_flush",
                        telemetry._last_flush - telemetry.TASK_FLUSH_SECONDS)
    runtime.run_with_parts(_answered)
    assert shared(redis_server) == {("engage", "429"): 6, ("treazure", "200"): 3}
    assert not tally


async def test_remote_flushes_when_it_closes(fake_runtime_redis, redis_server, tally) -> None:
    async with runtime.remote():
        tally[("engage", "202")] += 3
    assert shared(redis_server) == {("engage", "202"): 3}
    assert not tally


async def test_remote_flushes_periodically_while_open(
    fake_runtime_redis, redis_server, tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed = asyncio.Event()
    real_try_flush = telemetry.try_flush

    async def noting_try_flush(redis: Any, counts: Any = RESPONSES) -> None:
        await real_try_flush(redis, counts)
        flushed.set()

    monkeypatch.setattr(telemetry, "FLUSH_INTERVAL", 0.0)
    monkeypatch.setattr(telemetry, "try_flush", noting_try_flush)
    async with runtime.remote():
        tally[("engage", "202")] += 1
        flushed.clear()  # only a flush that starts after the count will do
        # The background flush, with the context still open (the bound only stops a hang).
        await asyncio.wait_for(flushed.wait(), 60)
        assert shared(redis_server) == {("engage", "202"): 1}


# -- the periodic flush stops cleanly ---------------------------------------------------------


class _SwallowingPipeline:
    """Swallows a cancel mid-send, as redis-py's asyncio.wait_for can on Python 3.11."""

    def __init__(self, entered: asyncio.Event) -> None:
        self.entered = entered

    def hincrby(self, *args: Any) -> None:
        return None

    async def execute(self) -> list[Any]:
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # until cancelled
        return []


class _SwallowingRedis:
    def __init__(self) -> None:
        self.entered = asyncio.Event()

    def pipeline(self, transaction: bool = True) -> _SwallowingPipeline:
        return _SwallowingPipeline(self.entered)


async def test_a_cancel_swallowed_mid_flush_still_ends_the_periodic_flush(
    tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "FLUSH_INTERVAL", 0.0)
    swallowing = _SwallowingRedis()
    flusher = telemetry.PeriodicFlush(swallowing)  # type: ignore[arg-type]
    tally[("engage", "202")] += 1
    await swallowing.entered.wait()

    flusher._task.cancel()  # as a loop being torn down cancels what is left on it
    done, _ = await asyncio.wait([flusher._task], timeout=60)  # the bound only stops a hang
    assert done


async def test_close_stops_the_loop_and_flushes_the_rest_once(redis, redis_server, tally) -> None:
    flusher = telemetry.PeriodicFlush(redis)  # the default interval: it never fires here
    tally[("engage", "202")] += 2
    await flusher.close()

    assert flusher._task.done() and not flusher._task.cancelled()
    assert shared(redis_server) == {("engage", "202"): 2}
    assert not tally
