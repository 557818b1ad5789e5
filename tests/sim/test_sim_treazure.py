"""The simulated Treazure API: token, balances jobs, transactions, history, account."""

import httpx
import pytest

from tests.support.sim import CLIENT, VAULT, add_accounts, fetch_token, guid

pytestmark = pytest.mark.integration  # starts processes

WINDOW = {"mutatedFrom": "2026-11-21T08:00:00Z", "mutatedTo": "2026-11-21T12:00:00Z"}


def start_job(client: httpx.Client, auth: dict[str, str], **body: str) -> str:
    payload = {**WINDOW, "loyaltyPointDefinitionId": "points", **body}
    response = client.post(f"{VAULT}/Balances/Get", json=payload, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()["href"]


def transaction(value: float, kind: str = "loads", comment: str = "Review bonus") -> dict:
    return {
        "loyaltyPrograms": [{"loyaltyPointDefinitionId": "points", kind: [{"value": value}]}],
        "context": {"comment": comment, "receiptNr": "pts-1", "operatorId": "engage"},
    }


def test_token_is_needed_and_checked(treazure: httpx.Client) -> None:
    assert treazure.get(f"{VAULT}/Account/{guid(1)}").status_code == 401
    bad = {"grant_type": "client_credentials", "scope": "api_loyaltyvault", **CLIENT}
    bad["client_secret"] = "wrong"
    response = treazure.post("/identity/connect/token", data=bad)
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})

    form = {"grant_type": "client_credentials", "scope": "api_loyaltyvault", **CLIENT}
    for field, error in (("grant_type", "unsupported_grant_type"), ("scope", "invalid_scope")):
        refused = treazure.post("/identity/connect/token", data={**form, field: "other"})
        assert (refused.status_code, refused.json()) == (400, {"error": error})
    body = treazure.post("/identity/connect/token", data=form).json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 5})
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert treazure.get(f"{VAULT}/Account/{guid(1)}", headers=auth).status_code == 200
    wrong = {"Authorization": "Bearer not-a-token"}
    assert treazure.get(f"{VAULT}/Account/{guid(1)}", headers=wrong).status_code == 401

    treazure.post("/_sim/tokens/revoke").raise_for_status()
    assert treazure.get(f"{VAULT}/Account/{guid(1)}", headers=auth).status_code == 401
    assert treazure.get("/_sim/stats").json()["token_requests"] == 4


def test_token_expires_after_its_ttl(treazure: httpx.Client) -> None:
    treazure.post("/_sim/config", json={"token_ttl": 0}).raise_for_status()
    auth = {"Authorization": f"Bearer {fetch_token(treazure)}"}
    assert treazure.get(f"{VAULT}/Account/{guid(1)}", headers=auth).status_code == 401


def test_balances_job_pages_the_log_window_with_duplicates(
    treazure: httpx.Client, auth: dict[str, str]
) -> None:
    add_accounts(
        treazure,
        {"accountNumber": guid(1), "balance": 1250.5, "mutatedAt": "2026-11-21T09:14:03Z"},
        {"accountNumber": guid(2), "balance": 0.07, "mutatedAt": "2026-11-21T09:15:00.250Z"},
        {"accountNumber": guid(3), "balance": 3, "mutatedAt": "2026-11-21T07:59:59Z"},  # before
        {"accountNumber": guid(4), "balance": 4, "mutatedAt": "2026-11-21T12:00:00Z"},  # at end
    )
    treazure.post(
        "/_sim/mutations",
        json={
            "mutations": [
                {"accountNumber": guid(1), "balance": 1300, "mutatedAt": "2026-11-21T10:00:00Z"}
            ]
        },
    ).raise_for_status()
    treazure.post("/_sim/config", json={"page_size": 2}).raise_for_status()
    href = start_job(treazure, auth)

    running = treazure.get(f"{href}/result", headers=auth)
    assert (running.status_code, running.json()) == (202, {"status": "Running"})
    assert running.headers["Retry-After"] == "0.1"
    first = treazure.get(f"{href}/result", headers=auth)
    assert first.status_code == 200
    assert first.json()["next"] == f"{href}/result?page=2"
    last = treazure.get(first.json()["next"], headers=auth).json()
    assert last["next"] is None
    items = first.json()["items"] + last["items"]
    assert [(i["accountNumber"], i["balance"], i["mutatedAt"]) for i in items] == [
        (guid(1), 1250.5, "2026-11-21T09:14:03Z"),
        (guid(2), 0.07, "2026-11-21T09:15:00.250Z"),
        (guid(1), 1300, "2026-11-21T10:00:00Z"),
    ]
    assert {i["loyaltyPointDefinitionId"] for i in items} == {"points"}
    assert b'"balance":0.07,' in first.content  # written exactly, not as a binary float


def test_balances_job_refuses_a_bad_request(treazure: httpx.Client, auth: dict[str, str]) -> None:
    get = f"{VAULT}/Balances/Get"
    for body in (
        {"mutatedTo": WINDOW["mutatedTo"], "loyaltyPointDefinitionId": "points"},
        {
            "mutatedFrom": "yesterday",
            "mutatedTo": WINDOW["mutatedTo"],
            "loyaltyPointDefinitionId": "points",
        },
        {**WINDOW, "loyaltyPointDefinitionId": "other"},
        {**WINDOW, "mutatedFrom": WINDOW["mutatedTo"], "loyaltyPointDefinitionId": "points"},
    ):
        assert treazure.post(get, json=body, headers=auth).status_code == 400, body


def test_balances_job_unknown_and_expired(treazure: httpx.Client, auth: dict[str, str]) -> None:
    missing = f"{VAULT}/Balances/Jobs/00000000-0000-0000-0000-000000000000/result"
    assert treazure.get(missing, headers=auth).status_code == 404
    href = start_job(treazure, auth)
    treazure.post("/_sim/jobs/expire").raise_for_status()
    assert treazure.get(f"{href}/result", headers=auth).status_code == 410

    treazure.post("/_sim/config", json={"job_ttl": 0}).raise_for_status()
    href = start_job(treazure, auth)
    assert treazure.get(f"{href}/result", headers=auth).status_code == 410


def test_balances_job_polling_is_configurable(treazure: httpx.Client, auth: dict[str, str]) -> None:
    treazure.post("/_sim/config", json={"job_running_polls": 2, "job_retry_after": None})
    href = start_job(treazure, auth)
    for _ in range(2):
        running = treazure.get(f"{href}/result", headers=auth)
        assert running.status_code == 202 and "Retry-After" not in running.headers
    assert treazure.get(f"{href}/result?page=0", headers=auth).status_code == 400
    done = treazure.get(f"{href}/result", headers=auth)
    assert done.json() == {"items": [], "next": None}


def test_transactions_book_load_and_redeem(treazure: httpx.Client, auth: dict[str, str]) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 100})
    url = f"{VAULT}/Account/{guid(1)}/Transaction"
    loaded = treazure.post(url, json=transaction(25.5), headers=auth)
    assert loaded.json() == {
        "accountNumber": guid(1),
        "loyaltyPrograms": [{"loyaltyPointDefinitionId": "points", "balance": 125.5}],
    }
    redeemed = treazure.post(url, json=transaction(0.5, "redemptions"), headers=auth).json()
    assert redeemed["loyaltyPrograms"][0]["balance"] == 125
    # Treazure does not deduplicate on receiptNr: the same booking twice is booked twice.
    treazure.post(url, json=transaction(1), headers=auth)
    assert (
        treazure.post(url, json=transaction(1), headers=auth).json()["loyaltyPrograms"][0][
            "balance"
        ]
        == 127
    )

    too_much = treazure.post(url, json=transaction(1000, "redemptions"), headers=auth)
    assert (too_much.status_code, too_much.json()) == (422, {"error": "InsufficientBalance"})
    unknown = f"{VAULT}/Account/{guid(9)}/Transaction"
    assert treazure.post(unknown, json=transaction(1), headers=auth).status_code == 404

    # A booking enters the mutation log, so the next balances job reports it.
    href = start_job(
        treazure, auth, mutatedFrom="2000-01-01T00:00:00Z", mutatedTo="2100-01-01T00:00:00Z"
    )
    treazure.get(f"{href}/result", headers=auth)
    items = treazure.get(f"{href}/result", headers=auth).json()["items"]
    assert [item["balance"] for item in items] == [100, 125.5, 125, 126, 127]


def test_invalid_transactions_book_nothing(treazure: httpx.Client, auth: dict[str, str]) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 100})
    url = f"{VAULT}/Account/{guid(1)}/Transaction"
    both = transaction(1)
    both["loyaltyPrograms"][0]["redemptions"] = [{"value": 1}]
    for body in (
        transaction(1, comment="x" * 101),
        transaction(0.001),
        transaction(-5),
        both,
        {
            **transaction(1),
            "loyaltyPrograms": [{"loyaltyPointDefinitionId": "other", "loads": [{"value": 1}]}],
        },
    ):
        assert treazure.post(url, json=body, headers=auth).status_code == 400, body
    assert (
        treazure.post(url, json=transaction(1, comment="x" * 100), headers=auth).status_code == 200
    )
    state = treazure.get(f"/_sim/treazure/account/{guid(1)}").json()
    assert (state["balance"], state["history_length"]) == (101, 2)


def test_history_oldest_first_and_from(treazure: httpx.Client, auth: dict[str, str]) -> None:
    add_accounts(
        treazure, {"accountNumber": guid(1), "balance": 10, "mutatedAt": "2026-01-01T00:00:00Z"}
    )
    treazure.post(f"{VAULT}/Account/{guid(1)}/Transaction", json=transaction(2.25), headers=auth)
    url = f"{VAULT}/Account/{guid(1)}/LoyaltyPrograms/points/History"
    opening, load = treazure.get(url, headers=auth).json()
    assert opening["dateTime"] == "2026-01-01T00:00:00Z" and opening["balance"] == 10
    assert load | {"dateTime": None} == {
        "dateTime": None,
        "amount": 2.25,
        "transactionType": "Load",
        "expiresAt": None,
        "balance": 12.25,
        "comment": "Review bonus",
        "operatorId": "engage",
        "shopId": None,
        "posId": None,
        "receiptNr": "pts-1",
        "properties": {},
    }
    assert load["dateTime"].endswith("Z")
    recent = treazure.get(url, params={"from": "2026-06-01T00:00:00Z"}, headers=auth).json()
    assert recent == [load]
    assert treazure.get(url, params={"from": "soon"}, headers=auth).status_code == 400
    assert treazure.get(url.replace(guid(1), guid(2)), headers=auth).status_code == 404


def test_account(treazure: httpx.Client, auth: dict[str, str]) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 99.99})
    account = treazure.get(f"{VAULT}/Account/{guid(1)}", headers=auth).json()
    assert account["loyaltyPrograms"] == [{"loyaltyPointDefinitionId": "points", "balance": 99.99}]
    assert treazure.get(f"{VAULT}/Account/{guid(2)}", headers=auth).status_code == 404
