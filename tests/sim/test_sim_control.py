"""The /_sim/ control API: seeding, crafted accounts and mutations, config, stats, compare."""

import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.sim import ROOT, VAULT, add_accounts, fetch_token, guid, running_sim

pytestmark = pytest.mark.integration  # starts processes

PUSH = "/api/v3/point-accounts/balances"


def push(engage: httpx.Client, balances: dict[str, float]) -> dict:
    rows = [
        {
            "contactId": contact,
            "amount": amount,
            "definitionId": 1,
            "timeStamp": "2026-11-21T09:00:00Z",
        }
        for contact, amount in balances.items()
    ]
    response = engage.post(PUSH, json=rows)
    assert response.status_code == 202, response.text
    return response.json()


def job_items(client: httpx.Client, auth: dict[str, str], since: str, until: str) -> list[dict]:
    body = {"mutatedFrom": since, "mutatedTo": until, "loyaltyPointDefinitionId": "points"}
    href = client.post(f"{VAULT}/Balances/Get", json=body, headers=auth).json()["href"]
    url: str | None = f"{href}/result"
    items: list[dict] = []
    while url:
        response = client.get(url, headers=auth)
        if response.status_code == 200:
            items += response.json()["items"]
            url = response.json()["next"]
    return items


def test_seed_splits_changed_old_and_engage_unknown(
    treazure: httpx.Client, engage: httpx.Client, auth: dict[str, str]
) -> None:
    seeded = treazure.post(
        "/_sim/seed",
        json={
            "contacts": 30,
            "changed": 20,
            "changed_from": "2026-11-21T08:00:00Z",
            "changed_to": "2026-11-21T09:00:00Z",
            "old_at": "2026-10-01T00:00:00Z",
            "engage_unknown": 3,
        },
    ).json()
    assert seeded["count"] == 30 and len(seeded["contacts"]) == 10
    changed = job_items(treazure, auth, "2026-11-21T08:00:00Z", "2026-11-21T09:00:00Z")
    assert len(changed) == 20 and changed[0]["accountNumber"] == seeded["contacts"][0]
    assert changed[0]["mutatedAt"] == "2026-11-21T08:00:00Z"
    assert all(item["mutatedAt"] < "2026-11-21T09:00:00Z" for item in changed)
    everything = job_items(treazure, auth, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
    assert len(everything) == 30 and everything[-1]["mutatedAt"] == "2026-10-01T00:00:00Z"

    result = push(engage, {item["accountNumber"]: item["balance"] for item in everything})
    assert len(result["notAccepted"]) == 3
    assert {row["reason"] for row in result["notAccepted"]} == {"ContactNotFound"}

    again = treazure.post("/_sim/seed", json={"contacts": 5, "start_index": 29})
    assert again.status_code == 409
    more = treazure.post("/_sim/seed", json={"contacts": 5, "start_index": 30}).json()
    assert more["count"] == 5 and more["contacts"][0] not in seeded["contacts"]


def test_seed_is_deterministic_with_two_decimals(treazure: httpx.Client) -> None:
    first = treazure.post("/_sim/seed", json={"contacts": 50}).json()["contacts"]
    balances = [treazure.get(f"/_sim/treazure/account/{c}").json()["balance"] for c in first]
    treazure.post("/_sim/reset").raise_for_status()
    assert treazure.post("/_sim/seed", json={"contacts": 50}).json()["contacts"] == first
    assert [
        treazure.get(f"/_sim/treazure/account/{c}").json()["balance"] for c in first
    ] == balances
    assert all(round(b, 2) == b for b in balances) and len(set(balances)) == len(balances)


def test_mutations_craft_duplicates_and_out_of_order_entries(
    treazure: httpx.Client, auth: dict[str, str]
) -> None:
    add_accounts(
        treazure, {"accountNumber": guid(1), "balance": 1, "mutatedAt": "2026-11-21T09:00:00Z"}
    )
    mutations = [
        {"accountNumber": guid(1), "balance": 3, "mutatedAt": "2026-11-21T11:00:00Z"},
        {"accountNumber": guid(1), "balance": 2, "mutatedAt": "2026-11-21T10:00:00Z"},  # older
    ]
    assert treazure.post("/_sim/mutations", json={"mutations": mutations}).json() == {"appended": 2}
    assert treazure.get(f"/_sim/treazure/account/{guid(1)}").json()["balance"] == 3
    items = job_items(treazure, auth, "2026-11-21T08:00:00Z", "2026-11-21T12:00:00Z")
    assert [item["balance"] for item in items] == [1, 3, 2]  # log order, not time order
    unknown = {"mutations": [{"accountNumber": guid(2), "balance": 1}]}
    assert treazure.post("/_sim/mutations", json=unknown).status_code == 404


def test_accounts_are_checked(treazure: httpx.Client) -> None:
    add_accounts(treazure, {"accountNumber": guid(1), "balance": 1})
    for accounts, status in (
        ([{"accountNumber": guid(1), "balance": 1}], 409),
        ([{"accountNumber": guid(2), "balance": 1}, {"accountNumber": guid(2), "balance": 1}], 409),
        ([{"accountNumber": "not-a-guid", "balance": 1}], 400),
        ([{"accountNumber": guid(3), "balance": 1.001}], 400),
        ([{"accountNumber": guid(3)}], 400),
    ):
        assert treazure.post("/_sim/accounts", json={"accounts": accounts}).status_code == status


def test_mutate_random_changes_balances_now(treazure: httpx.Client) -> None:
    contacts = treazure.post("/_sim/seed", json={"contacts": 10}).json()["contacts"]
    before = {c: treazure.get(f"/_sim/treazure/account/{c}").json() for c in contacts}
    changed = treazure.post("/_sim/mutate_random", json={"count": 5}).json()
    assert changed["changed"] == 5 and len(set(changed["contacts"])) == 5
    for contact in changed["contacts"]:
        after = treazure.get(f"/_sim/treazure/account/{contact}").json()
        assert after["balance"] != before[contact]["balance"] and after["history_length"] == 2
    assert treazure.post("/_sim/mutate_random", json={"count": 11}).status_code == 400


def test_compare_reports_mismatches(treazure: httpx.Client, engage: httpx.Client) -> None:
    add_accounts(
        treazure,
        {"accountNumber": guid(1), "balance": 1.5, "mutatedAt": "2026-11-21T09:00:00Z"},
        {"accountNumber": guid(2), "balance": 2, "mutatedAt": "2026-11-21T10:00:00Z"},
        {"accountNumber": guid(3), "balance": 3, "in_engage": False},
    )
    assert treazure.post("/_sim/compare").json() == {
        "checked": 2,
        "mismatch_count": 2,
        "mismatches": [
            {"contactId": guid(1), "treazure": 1.5, "engage": 0},
            {"contactId": guid(2), "treazure": 2, "engage": 0},
        ],
    }
    since = treazure.post("/_sim/compare", json={"since": "2026-11-21T09:30:00Z"}).json()
    assert (since["checked"], since["mismatch_count"]) == (1, 1)
    push(engage, {guid(1): 1.5, guid(2): 2})
    assert treazure.post("/_sim/compare").json()["mismatch_count"] == 0


def test_config_updates_are_checked_and_reset(treazure: httpx.Client, engage: httpx.Client) -> None:
    config = treazure.get("/_sim/config").json()
    assert config["api_key"] == "sim-key" and config["page_size"] == 5000
    updated = treazure.post("/_sim/config", json={"api_key": "new-key", "job_retry_after": 2})
    assert updated.json()["job_retry_after"] == "2"
    assert engage.get("/api/v3/point-accounts", params={"contactId": guid(1)}).status_code == 401
    for bad in ({"page_size": 0}, {"colour": "red"}, {"latency": {"nowhere": 1}}, {"job_ttl": "1"}):
        assert treazure.post("/_sim/config", json=bad).status_code == 400, bad
    treazure.post("/_sim/reset").raise_for_status()
    assert treazure.get("/_sim/config").json() == config


def test_stats_reset(treazure: httpx.Client, engage: httpx.Client) -> None:
    engage.get("/api/v3/point-accounts", params={"contactId": guid(1)})
    fetch_token(treazure)
    assert treazure.get("/_sim/stats").json()["requests"] == {
        "engage.accounts 200": 1,
        "treazure.token 200": 1,
    }
    assert treazure.post("/_sim/stats/reset").json() == {
        "requests": {},
        "arrived": {},
        "token_requests": 0,
        "engage_push_requests": 0,
        "engage_push_items": 0,
        "engage_429": 0,
        "engage_peak_rps": 0,
        "faults_pending": 0,
    }


def test_cli_seeds_and_sets_credentials() -> None:
    args = ("--seed-contacts", "40", "--seed-changed", "10", "--api-key", "cli-key")
    with running_sim(*args) as urls, httpx.Client(base_url=urls["engage"]) as engage:
        # The control API answers on the Engage port too, over the same state.
        assert engage.post("/_sim/compare").json()["checked"] == 40
        recent = engage.post("/_sim/compare", json={"since": "2026-01-01T00:00:00Z"}).json()
        assert recent["checked"] >= 10
        headers = {"apikey": "cli-key", "User-Agent": "tests/1"}
        response = engage.get(
            "/api/v3/point-accounts", params={"contactId": guid(1)}, headers=headers
        )
        assert response.status_code == 200
        engage.post("/_sim/reset").raise_for_status()  # reset keeps the CLI's settings
        assert engage.get("/_sim/config").json()["api_key"] == "cli-key"


def test_sigint_stops_the_simulator_cleanly() -> None:
    command = [sys.executable, "-m", "sims", "--treazure-port", "0", "--engage-port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().startswith('{"treazure": ')
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
