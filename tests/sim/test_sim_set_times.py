"""POST /_sim/engage/set-times: when Engage last took each contact's balance (bench latency)."""

import time

import httpx
import pytest

from tests.support.sim import add_accounts, guid

pytestmark = pytest.mark.integration  # starts processes

PUSH = "/api/v3/point-accounts/balances"
SET_TIMES = "/_sim/engage/set-times"


def push(engage: httpx.Client, *rows: tuple[str, float]) -> dict:
    body = [
        {"contactId": contact, "amount": amount, "definitionId": 1,
         "timeStamp": "2026-11-21T09:00:00Z"}
        for contact, amount in rows
    ]
    response = engage.post(PUSH, json=body)
    assert response.status_code == 202, response.text
    return response.json()


def set_times(client: httpx.Client, *ids: str) -> dict:
    response = client.post(SET_TIMES, json={"contactIds": list(ids)})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_never_pushed_unknown_and_not_in_engage(treazure: httpx.Client) -> None:
    add_accounts(
        treazure,
        {"accountNumber": guid(1), "balance": 5, "engage_balance": 2.5},
        {"accountNumber": guid(2), "balance": 5, "in_engage": False},
    )
    assert set_times(treazure, guid(1), guid(2), guid(3)) == {
        guid(1): {"setAtUs": None, "setCount": 0, "balance": 2.5},
        guid(2): None,  # a Treazure account that Engage lacks
        guid(3): None,  # no such account at all
    }
    assert set_times(treazure) == {}


def test_accepted_rows_are_stamped_refused_ones_not(
    treazure: httpx.Client, engage: httpx.Client
) -> None:
    add_accounts(
        treazure,
        {"accountNumber": guid(1), "balance": 5},
        {"accountNumber": guid(2), "balance": 5},
    )
    before_us = time.time_ns() // 1000
    refused = push(engage, (guid(1), 7), (guid(1), 8.25), (guid(2), -1))["notAccepted"]
    after_us = time.time_ns() // 1000
    assert refused == [{"contactId": guid(2), "reason": "InvalidAmount"}]
    items = set_times(treazure, guid(1), guid(2))
    first = items[guid(1)]
    assert (first["setCount"], first["balance"]) == (2, 8.25)
    # now_us() keeps milliseconds, so the stamp may sit up to 1 ms before `before_us`.
    assert before_us - 1000 <= first["setAtUs"] <= after_us
    assert items[guid(2)] == {"setAtUs": None, "setCount": 0, "balance": 0}
    read = treazure.get(f"/_sim/engage/balance/{guid(1)}").json()
    assert read["set_at_us"] == first["setAtUs"]

    time.sleep(0.005)
    push(engage, (guid(1), 9))
    later = set_times(engage, guid(1))[guid(1)]  # the control API answers on both ports
    assert later["setAtUs"] > first["setAtUs"]
    assert (later["setCount"], later["balance"]) == (3, 9)


def test_seeded_contacts_start_unstamped(treazure: httpx.Client) -> None:
    ids = treazure.post("/_sim/seed", json={"contacts": 3}).json()["contacts"]
    items = set_times(treazure, *ids)
    assert len(items) == 3
    assert all(item is not None and item["setAtUs"] is None for item in items.values())


def test_bad_bodies_are_refused(treazure: httpx.Client) -> None:
    for body in ({}, {"contactIds": "x"}, {"contactIds": [1]}, []):
        assert treazure.post(SET_TIMES, json=body).status_code == 400
    assert treazure.post(SET_TIMES, content=b"not json").status_code == 400
