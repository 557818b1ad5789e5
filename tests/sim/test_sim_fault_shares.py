"""Faults drawn by chance (`fault_shares` in `/_sim/config`): a share of requests fails."""

import httpx
import pytest

from tests.support.sim import VAULT, add_accounts, guid

pytestmark = pytest.mark.integration  # starts processes

REQUESTS = 200


def load(receipt: str) -> dict[str, object]:
    return {
        "loyaltyPrograms": [{"loyaltyPointDefinitionId": "points", "loads": [{"value": 1}]}],
        "context": {"comment": "bonus", "receiptNr": receipt, "operatorId": "engage"},
    }


def book_many(client: httpx.Client, auth: dict[str, str], account: str) -> dict[str, int]:
    """Sends REQUESTS bookings; counts the answers by status ("drop": no answer)."""
    answers: dict[str, int] = {}
    url = f"{VAULT}/Account/{account}/Transaction"
    for n in range(REQUESTS):
        try:
            status = str(client.post(url, json=load(f"r-{n}"), headers=auth).status_code)
        except httpx.HTTPError:
            status = "drop"
        answers[status] = answers.get(status, 0) + 1
    return answers


def account_of(client: httpx.Client, account: str) -> dict[str, object]:
    return client.get(f"/_sim/treazure/account/{account}").json()


def test_shares_fail_that_share_of_requests_and_apply_only_the_drops_after_apply(
    treazure: httpx.Client, auth: dict[str, str]
) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 0})
    shares = {"drop_after_apply": 0.3, "status_503": 0.2}
    config = treazure.post("/_sim/config", json={
        "fault_shares": {"treazure.transaction": shares}}).json()
    assert config["fault_shares"] == {"treazure.transaction": shares}

    answers = book_many(treazure, auth, guid(1))

    assert set(answers) == {"200", "503", "drop"}
    # Roughly the shares (a fixed seed: the same draws every run).
    assert 40 <= answers["drop"] <= 80 and 20 <= answers["503"] <= 60
    # A drop after apply books; a 503 books nothing.
    booked = answers["200"] + answers["drop"]
    assert account_of(treazure, guid(1)) == {
        "accountNumber": guid(1), "balance": booked, "history_length": 1 + booked}
    stats = treazure.get("/_sim/stats").json()["requests"]
    assert stats["treazure.transaction drop"] == answers["drop"]
    assert stats["treazure.transaction 503"] == answers["503"]


def test_queued_faults_go_before_shares_and_reset_ends_the_shares(
    treazure: httpx.Client, auth: dict[str, str]
) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 0})
    treazure.post("/_sim/config", json={
        "fault_shares": {"treazure.transaction": {"status_500": 1.0}}}).raise_for_status()
    treazure.post("/_sim/faults", json={
        "target": "treazure.transaction", "kind": "status", "status": 429}).raise_for_status()
    url = f"{VAULT}/Account/{guid(1)}/Transaction"
    assert treazure.post(url, json=load("a"), headers=auth).status_code == 429
    assert treazure.post(url, json=load("b"), headers=auth).status_code == 500
    treazure.post("/_sim/reset").raise_for_status()
    assert treazure.get("/_sim/config").json()["fault_shares"] == {}


@pytest.mark.parametrize("bad", [
    {"nowhere": {"drop": 0.1}},
    {"treazure.transaction": {"status_99": 0.1}},
    {"treazure.transaction": {"status_abc": 0.1}},
    {"treazure.transaction": {"latency": 0.1}},
    {"treazure.transaction": {"drop": 0.6, "status_503": 0.5}},
    {"treazure.transaction": {"drop": -0.1}},
    {"treazure.transaction": ["drop"]},
])
def test_bad_shares_are_refused(treazure: httpx.Client, bad: object) -> None:
    response = treazure.post("/_sim/config", json={"fault_shares": bad})
    assert response.status_code == 400
    assert treazure.get("/_sim/config").json()["fault_shares"] == {}
