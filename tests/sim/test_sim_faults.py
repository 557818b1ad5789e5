"""Fault injection: canned statuses, latency, dropped connections, expiry."""

import time

import httpx
import pytest

from tests.support.sim import VAULT, add_accounts, guid

pytestmark = pytest.mark.integration  # starts processes

PUSH = "/api/v3/point-accounts/balances"
LOAD = {
    "loyaltyPrograms": [{"loyaltyPointDefinitionId": "points", "loads": [{"value": 5}]}],
    "context": {"comment": "bonus", "receiptNr": "r-1", "operatorId": "engage"},
}


def add_fault(client: httpx.Client, **spec: object) -> None:
    client.post("/_sim/faults", json=spec).raise_for_status()


def balance(client: httpx.Client, contact: str) -> float:
    return client.get(f"/_sim/treazure/account/{contact}").json()["balance"]


@pytest.fixture
def account(treazure: httpx.Client) -> str:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 10})
    return guid(1)


def test_status_fault_answers_instead_and_applies_nothing(
    treazure: httpx.Client, auth: dict[str, str], account: str
) -> None:
    add_fault(
        treazure,
        target="treazure.transaction",
        kind="status",
        count=2,
        status=503,
        retry_after="2",
        body="html",
    )
    assert treazure.get("/_sim/stats").json()["faults_pending"] == 2
    url = f"{VAULT}/Account/{account}/Transaction"
    for _ in range(2):
        response = treazure.post(url, json=LOAD, headers=auth)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<h1>503 Service Unavailable</h1>" in response.text
    assert balance(treazure, account) == 10
    assert treazure.post(url, json=LOAD, headers=auth).status_code == 200
    stats = treazure.get("/_sim/stats").json()
    assert stats["faults_pending"] == 0
    assert stats["requests"]["treazure.transaction 503"] == 2


def test_status_fault_bodies(treazure: httpx.Client) -> None:
    add_fault(treazure, target="treazure.token", kind="status", status=429)
    add_fault(treazure, target="treazure.token", kind="status", status=500, body="text")
    first = treazure.post("/identity/connect/token")
    assert (first.status_code, first.json()) == (429, {"error": "SimulatedFault", "status": 429})
    assert "Retry-After" not in first.headers
    second = treazure.post("/identity/connect/token")
    assert (second.status_code, second.text) == (500, "500 Internal Server Error")


def test_latency_fault_and_configured_latency(treazure: httpx.Client, engage: httpx.Client) -> None:
    add_fault(treazure, target="engage.accounts", kind="latency", seconds=0.3)
    started = time.perf_counter()
    slow = engage.get("/api/v3/point-accounts", params={"contactId": guid(1)})
    assert slow.status_code == 200 and time.perf_counter() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        add_fault(treazure, target="engage.accounts", kind="latency", seconds=0.5)
        engage.get("/api/v3/point-accounts", params={"contactId": guid(1)}, timeout=0.1)

    treazure.post("/_sim/config", json={"latency": {"engage.accounts": 0.2}}).raise_for_status()
    started = time.perf_counter()
    engage.get("/api/v3/point-accounts", params={"contactId": guid(1)})
    assert time.perf_counter() - started >= 0.2


def test_drop_closes_the_connection_and_applies_nothing(
    treazure: httpx.Client, auth: dict[str, str], account: str
) -> None:
    add_fault(treazure, target="treazure.transaction", kind="drop")
    url = f"{VAULT}/Account/{account}/Transaction"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        treazure.post(url, json=LOAD, headers=auth)
    assert balance(treazure, account) == 10
    assert treazure.get("/_sim/stats").json()["requests"]["treazure.transaction drop"] == 1
    assert treazure.post(url, json=LOAD, headers=auth).status_code == 200


def test_drop_after_apply_books_although_the_client_saw_an_error(
    treazure: httpx.Client, auth: dict[str, str], engage: httpx.Client, account: str
) -> None:
    add_fault(treazure, target="treazure.transaction", kind="drop_after_apply")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        treazure.post(f"{VAULT}/Account/{account}/Transaction", json=LOAD, headers=auth)
    assert balance(treazure, account) == 15

    add_fault(treazure, target="engage.balances", kind="drop_after_apply")
    push = [
        {"contactId": account, "amount": 15, "definitionId": 1, "timeStamp": "2026-11-21T09:00:00Z"}
    ]
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        engage.post(PUSH, json=push)
    read = treazure.get(f"/_sim/engage/balance/{account}").json()
    assert (read["balance"], read["set_count"]) == (15, 1)


def test_expire_fault_answers_410_once(treazure: httpx.Client, auth: dict[str, str]) -> None:
    treazure.post("/_sim/config", json={"job_running_polls": 0}).raise_for_status()
    window = {"mutatedFrom": "2026-01-01T00:00:00Z", "mutatedTo": "2026-01-02T00:00:00Z"}
    href = treazure.post(
        f"{VAULT}/Balances/Get", json={**window, "loyaltyPointDefinitionId": "points"}, headers=auth
    ).json()["href"]
    add_fault(treazure, target="treazure.balances_result", kind="expire")
    assert treazure.get(f"{href}/result", headers=auth).status_code == 410
    assert treazure.get(f"{href}/result", headers=auth).status_code == 200


def test_faults_are_cleared_and_checked(treazure: httpx.Client, engage: httpx.Client) -> None:
    add_fault(treazure, target="engage.accounts", kind="status", count=5)
    assert treazure.delete("/_sim/faults").json() == {"faults_pending": 0}
    assert engage.get("/api/v3/point-accounts", params={"contactId": guid(1)}).status_code == 200
    for spec in (
        {"target": "nowhere", "kind": "status"},
        {"target": "engage.accounts", "kind": "explode"},
        {"target": "engage.accounts", "kind": "expire"},
        {"target": "engage.accounts", "kind": "status", "count": 0},
        {"target": "engage.accounts", "kind": "status", "body": "xml"},
    ):
        assert treazure.post("/_sim/faults", json=spec).status_code == 400, spec
