"""The Atreemo and Contlo simulators, in-process: signatures and keys, the 400 refusals, the
rate limits (on a hand-driven clock), each fault, arrival-order records and the stats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sims.relays import atreemo, contlo
from sims.relays.destination import Destination
from sims.senders import sign_toggle, toggle_event
from tests.support.toggle import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def atreemo_sim(clock: Clock) -> AsyncIterator[tuple[TestClient, Destination]]:
    state = atreemo.atreemo_state(clock=clock)
    async with TestClient(TestServer(atreemo.atreemo_app(state))) as client:
        yield client, state


@pytest.fixture
async def contlo_sim(clock: Clock) -> AsyncIterator[tuple[TestClient, Destination]]:
    state = contlo.contlo_state(clock=clock)
    async with TestClient(TestServer(contlo.contlo_app(state))) as client:
        yield client, state


async def deliver(client: TestClient, body: bytes, secret: str = atreemo.SECRET) -> int:
    response = await client.post(atreemo.PATH, data=body, headers=sign_toggle(body, secret))
    return response.status


TRACKED = {"event": "Wallet Coins Rewarded", "email": "asha@example.in",
           "properties": {"wallet_coin_amount": 50}, "profile_properties": {"name": "Asha"}}


async def track(client: TestClient, body: dict | None = None,
                key: str = contlo.API_KEY) -> tuple[int, dict]:
    response = await client.post(contlo.PATH, json=TRACKED if body is None else body,
                                 headers={"X-API-KEY": key})
    return response.status, await response.json()


async def stats(client: TestClient) -> dict:
    return await (await client.get("/_sim/stats")).json()


# -- Atreemo ------------------------------------------------------------------------------


async def test_atreemo_records_signed_events_in_arrival_order_and_never_dedups(
    atreemo_sim,
) -> None:
    client, _ = atreemo_sim
    first = toggle_event("card.balance_adjusted", {"object": "balance_adjustment"}, id=2)
    second = toggle_event("card.registered", {"object": "card"}, id=1)

    for body in (first, second, first):
        assert await deliver(client, body) == 200

    listing = await (await client.get(atreemo.DELIVERIES)).json()
    assert listing["count"] == 3
    assert [(item["seq"], item["id"]) for item in listing["items"]] == [(1, 2), (2, 1), (3, 2)]
    assert listing["items"][0]["raw"].encode() == first  # what arrived, byte for byte


async def test_atreemo_refuses_a_bad_or_missing_signature(atreemo_sim) -> None:
    client, state = atreemo_sim
    body = toggle_event("order.created", {"object": "order"})

    assert await deliver(client, body, secret="not-atreemo-secret") == 401
    unsigned = await client.post(atreemo.PATH, data=body)
    assert unsigned.status == 401
    assert await deliver(client, body + b" ", secret=atreemo.SECRET) == 200  # re-signed
    tampered = await client.post(atreemo.PATH, data=body + b" ",
                                 headers=sign_toggle(body, atreemo.SECRET))
    assert tampered.status == 401
    assert len(state.received) == 1 and (await stats(client))["unauthorized"] == 3


async def test_atreemo_refuses_what_is_not_a_toggle_event_saying_why(atreemo_sim) -> None:
    client, state = atreemo_sim

    response = await client.post(atreemo.PATH, data=b'{"hello": 1}',
                                 headers=sign_toggle(b'{"hello": 1}', atreemo.SECRET))

    assert response.status == 400
    assert "id and type are required" in (await response.json())["message"]
    assert state.received == []


async def test_atreemo_answers_429_above_20_per_second(atreemo_sim, clock: Clock) -> None:
    client, state = atreemo_sim
    body = toggle_event("order.created", {"object": "order"})

    statuses = [await deliver(client, body) for _ in range(21)]
    throttled = await client.post(atreemo.PATH, data=body, headers=sign_toggle(body,
                                                                               atreemo.SECRET))
    clock.now += 1.0
    after = await deliver(client, body)

    assert statuses == [200] * 20 + [429]
    assert throttled.status == 429 and throttled.headers["Retry-After"] == "1"
    assert after == 200
    assert len(state.received) == 21
    figures = await stats(client)
    assert figures["throttled"] == 2 and figures["peak_per_second"] == 22


# -- faults (the same machinery on both) ---------------------------------------------------


async def test_a_status_fault_answers_it_and_records_nothing(atreemo_sim) -> None:
    client, state = atreemo_sim
    fault = {"kind": "status", "status": 503, "retry_after": 2, "count": 2}
    assert (await client.post("/_sim/faults", json=fault)).status == 200
    body = toggle_event("order.created", {"object": "order"})

    first = await client.post(atreemo.PATH, data=body, headers=sign_toggle(body,
                                                                            atreemo.SECRET))
    assert first.status == 503 and first.headers["Retry-After"] == "2"
    assert await deliver(client, body) == 503
    assert await deliver(client, body) == 200
    assert len(state.received) == 1
    assert (await stats(client))["answers"] == {"503": 2, "200": 1}


async def test_drop_records_nothing_and_drop_after_apply_records_the_event(
    contlo_sim,
) -> None:
    client, state = contlo_sim
    await client.post("/_sim/faults", json={"kind": "drop"})
    await client.post("/_sim/faults", json={"kind": "drop_after_apply"})
    assert (await stats(client))["faults_pending"] == 2

    for _ in range(2):
        with pytest.raises(aiohttp.ClientError):  # closed without an answer
            await track(client)

    assert len(state.received) == 1  # applied once, answered never
    figures = await stats(client)
    assert figures["answers"] == {"drop": 2} and figures["faults_pending"] == 0


async def test_a_latency_fault_delays_then_serves(contlo_sim) -> None:
    client, state = contlo_sim
    await client.post("/_sim/faults", json={"kind": "latency", "seconds": 0})

    assert (await track(client))[0] == 200
    assert len(state.received) == 1


@pytest.mark.parametrize("spec", [{"kind": "explode"}, {"kind": "status", "count": 0},
                                  {"kind": "status", "status": 99}])
async def test_a_malformed_fault_is_refused(atreemo_sim, spec) -> None:
    client, _ = atreemo_sim

    response = await client.post("/_sim/faults", json=spec)

    assert response.status == 400


async def test_reset_forgets_records_faults_and_stats(atreemo_sim) -> None:
    client, state = atreemo_sim
    await client.post("/_sim/config", json={"credential": "rotated", "rate_limit": 5})
    body = toggle_event("order.created", {"object": "order"})
    assert await deliver(client, body, secret="rotated") == 200
    await client.post("/_sim/faults", json={"kind": "drop", "count": 3})

    await client.post("/_sim/reset")

    assert state.received == [] and state.credential == atreemo.SECRET
    assert await stats(client) == {"requests": 0, "accepted": 0, "answers": {}, "throttled": 0,
                                   "unauthorized": 0, "peak_per_second": 0, "rate_limit": 20,
                                   "faults_pending": 0}


# -- Contlo -------------------------------------------------------------------------------


async def test_contlo_tracks_with_the_right_key(contlo_sim) -> None:
    client, _ = contlo_sim

    assert await track(client) == (200, {"success": True})
    assert await track(client) == (200, {"success": True})  # no deduplication

    events = await (await client.get(contlo.EVENTS)).json()
    assert events["count"] == 2
    assert events["items"][0]["event"] == "Wallet Coins Rewarded"
    assert events["items"][0]["properties"] == {"wallet_coin_amount": 50}
    assert events["items"][1]["seq"] == 2


async def test_contlo_refuses_a_wrong_key(contlo_sim) -> None:
    client, state = contlo_sim

    status, body = await track(client, key="wrong")

    assert status == 401 and body["success"] is False
    assert state.received == [] and (await stats(client))["unauthorized"] == 1


@pytest.mark.parametrize("contact", [{}, {"email": "", "phone_number": ""},
                                     {"email": None}])
async def test_contlo_needs_email_or_phone(contlo_sim, contact) -> None:
    client, state = contlo_sim
    body = {key: value for key, value in TRACKED.items() if key != "email"} | contact

    assert await track(client, body) == (400, {"success": False,
                                              "message": contlo.NO_CONTACT})
    assert state.received == []


async def test_contlo_takes_a_phone_alone(contlo_sim) -> None:
    client, state = contlo_sim
    body = {key: value for key, value in TRACKED.items() if key != "email"}

    assert (await track(client, body | {"phone_number": "+919800000000"}))[0] == 200
    assert state.received[0]["phone_number"] == "+919800000000"


async def test_contlo_refuses_a_malformed_body(contlo_sim) -> None:
    client, _ = contlo_sim

    response = await client.post(contlo.PATH, data=b"[1]", headers={"X-API-KEY": contlo.API_KEY})
    status, body = await track(client, {"email": "a@b.in"})

    assert response.status == 400
    assert (status, body["message"]) == (400, "event is required")


async def test_contlo_answers_429_above_10_per_second(contlo_sim, clock: Clock) -> None:
    client, state = contlo_sim

    statuses = [(await track(client))[0] for _ in range(11)]
    clock.now += 0.5
    still = (await track(client))[0]
    clock.now += 0.6
    again = (await track(client))[0]

    assert statuses == [200] * 10 + [429]
    assert (still, again) == (429, 200)
    assert len(state.received) == 11 and (await stats(client))["throttled"] == 2
