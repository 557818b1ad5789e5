"""The simulated Engage API: header checks, balance pushes, reads, rate limit."""

import httpx
import pytest

from tests.support.sim import add_accounts, guid

pytestmark = pytest.mark.integration  # starts processes

PUSH = "/api/v3/point-accounts/balances"


def row(contact: str, amount: float, definition: int = 1) -> dict:
    return {
        "contactId": contact,
        "amount": amount,
        "definitionId": definition,
        "timeStamp": "2026-11-21T09:14:03Z",
    }


def test_headers_are_checked(engage: httpx.Client) -> None:
    body = [row(guid(1), 1)]
    assert engage.post(PUSH, json=body, headers={"apikey": "wrong"}).status_code == 401
    without_key = engage.build_request("POST", PUSH, json=body)
    del without_key.headers["apikey"]
    assert engage.send(without_key).status_code == 401
    no_agent = engage.post(PUSH, json=body, headers={"User-Agent": ""})
    assert no_agent.status_code == 400
    as_text = engage.post(PUSH, content=b"[]", headers={"Content-Type": "text/plain"})
    assert (as_text.status_code, as_text.text) == (500, "An error has occurred")


def test_push_applies_valid_rows_and_reports_the_rest(
    treazure: httpx.Client, engage: httpx.Client
) -> None:
    add_accounts(
        treazure,
        {"accountNumber": guid(1), "balance": 5},
        {"accountNumber": guid(2), "balance": 5},
        {"accountNumber": guid(3), "balance": 5, "in_engage": False},
    )
    response = engage.post(
        "/api/v2/point-accounts/balances",
        json=[
            row(guid(1), 10),
            row(guid(1), 1275.5),  # applied in order: the last one wins
            row(guid(2), 1.005),
            row(guid(2), 2, definition=7),
            row(guid(3), 3),
            row(guid(4), 4),
        ],
    )
    assert response.status_code == 202
    body = response.json()
    assert len(body["transactionId"]) == 36
    assert body["notAccepted"] == [
        {"contactId": guid(2), "reason": "InvalidAmount"},
        {"contactId": guid(2), "reason": "UnknownDefinition"},
        {"contactId": guid(3), "reason": "ContactNotFound"},
        {"contactId": guid(4), "reason": "ContactNotFound"},
    ]
    read = treazure.get(f"/_sim/engage/balance/{guid(1)}").json()
    assert (read["balance"], read["set_count"]) == (1275.5, 2)
    assert read["set_at_us"] > 0
    assert treazure.get(f"/_sim/engage/balance/{guid(2)}").json()["set_count"] == 0
    assert treazure.get(f"/_sim/engage/balance/{guid(3)}").status_code == 404
    stats = treazure.get("/_sim/stats").json()
    assert (stats["engage_push_requests"], stats["engage_push_items"]) == (1, 6)


def test_push_over_1000_items_is_refused_whole(
    treazure: httpx.Client, engage: httpx.Client
) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 5})
    assert engage.post(PUSH, json=[row(guid(1), 1)] * 1001).status_code == 400
    assert engage.post(PUSH, json={"contactId": guid(1)}).status_code == 400
    assert treazure.get(f"/_sim/engage/balance/{guid(1)}").json()["set_count"] == 0
    assert engage.post(PUSH, json=[row(guid(1), 1)] * 1000).status_code == 202


def test_point_accounts_read(treazure: httpx.Client, engage: httpx.Client) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 5, "engage_balance": 7.5})
    known = engage.get("/api/v3/point-accounts", params={"contactId": guid(1)}).json()
    assert known == {
        "items": [
            {
                "id": 1,
                "contactId": guid(1),
                "definitionId": 1,
                "balance": 7.5,
                "pendingPoints": 0,
                "balanceExpires": None,
            }
        ],
        "totalCount": 1,
        "offset": 0,
        "count": 1,
    }
    unknown = engage.get("/api/v2/point-accounts", params={"contactId": guid(2)}).json()
    assert (unknown["items"], unknown["totalCount"]) == ([], 0)


def test_rate_limit_answers_429_with_retry_after_on_every_other(
    treazure: httpx.Client, engage: httpx.Client
) -> None:
    treazure.post("/_sim/config", json={"engage_rate_limit": 5}).raise_for_status()
    # Eight requests back to back take a few milliseconds: all fall in one second.
    responses = [
        engage.get("/api/v3/point-accounts", params={"contactId": guid(1)}) for _ in range(8)
    ]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    assert [r.headers.get("Retry-After") for r in responses[5:]] == ["1", None, "1"]
    stats = treazure.get("/_sim/stats").json()
    assert stats["engage_429"] == 3
    assert stats["engage_peak_rps"] == 8
    assert stats["requests"] == {"engage.accounts 200": 5, "engage.accounts 429": 3}
