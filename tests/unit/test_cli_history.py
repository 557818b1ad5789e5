"""`pointsync history …`: the CLI's own logic on a SQLite file; Treazure's side
(`worker.flows.history.fetch_history`) is replaced by a recorder that stores given entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from tests.support.unit import CLIENT_SECRET, cli_database
from worker.base.http import RemoteError
from worker.faces import runtime
from worker.faces.cli import history as cli_history
from worker.faces.cli.app import cli
from worker.flows import history
from worker.flows.parts import Parts
from worker.store.history import HistoryStore

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"


def entry(day: int, amount: float, balance: float, kind: str = "Load") -> dict[str, Any]:
    return {"dateTime": f"2026-11-{day:02d}T09:14:03Z", "amount": amount,
            "transactionType": kind, "expiresAt": None, "balance": balance,
            "comment": f"day {day}", "operatorId": "engage", "shopId": None, "posId": None,
            "receiptNr": f"pts-{day:04d}", "properties": {}}


ENTRIES = [entry(1, 100, 100), entry(2, 25.5, 125.5), entry(3, -20, 105.5, "Redeem"),
           entry(4, 10, 115.5), entry(5, -5.5, 110, "Expire")]  # oldest first, as sent
NEWEST_FIRST = ENTRIES[::-1]


class FetchStub:
    """Stands in for history.fetch_history: stores `entries` in the parts' store, or raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.entries: list[dict[str, Any]] = ENTRIES
        self.error: Exception | None = None

    async def __call__(self, parts: Parts, contact_id: str) -> dict[str, Any]:
        self.calls.append(contact_id)
        assert parts.treazure is not None  # the CLI built real clients through remote()
        if self.error is not None:
            raise self.error
        added = HistoryStore(parts.store).save(contact_id, self.entries)
        return {"contact_id": contact_id, "received": len(self.entries), "added": added,
                "incremental": False}


@pytest.fixture
def database_file(env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    yield from cli_database(env, tmp_path, REDIS_URL="redis://127.0.0.1:6379/11")


@pytest.fixture
def stored(database_file: str) -> HistoryStore:
    return HistoryStore(runtime.prepare_store(database_file))


@pytest.fixture
def fetch(monkeypatch: pytest.MonkeyPatch) -> FetchStub:
    stub = FetchStub()
    monkeypatch.setattr(history, "fetch_history", stub)
    return stub


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["history", *args])


def in_order(text: str, *needles: str) -> bool:
    places = [text.find(n) for n in needles]
    return -1 not in places and places == sorted(places)


def test_table_shows_the_stored_entries_newest_first(
    stored: HistoryStore, fetch: FetchStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_history, "console", Console(width=120))  # headers on one line
    stored.save(CONTACT, ENTRIES)

    result = run(CONTACT)

    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("dateTime", "transactionType", "amount", "balance", "comment", "receiptNr"):
        assert name in out
    assert in_order(out, "pts-0005", "pts-0004", "pts-0003", "pts-0002", "pts-0001")
    assert "Expire" in out and "-5.5" in out and "125.5" in out
    assert "5 of 5 entries" in out
    assert fetch.calls == []  # fetched before: Treazure is not asked


def test_offset_and_count_page_the_table(stored: HistoryStore, fetch: FetchStub) -> None:
    stored.save(CONTACT, ENTRIES)

    result = run(CONTACT, "--offset", "1", "--count", "2")

    assert result.exit_code == 0, result.output
    assert in_order(result.stdout, "pts-0004", "pts-0003")
    assert "pts-0005" not in result.stdout and "pts-0002" not in result.stdout
    assert "2 of 5 entries" in result.stdout


def test_json_is_the_web_endpoints_answer(stored: HistoryStore, fetch: FetchStub) -> None:
    stored.save(CONTACT, ENTRIES)

    result = run(CONTACT, "--json", "--offset", "1", "--count", "3")

    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == {"items": NEWEST_FIRST[1:4], "totalCount": 5, "offset": 1, "count": 3}
    assert list(answer) == ["items", "totalCount", "offset", "count"]


def test_a_contact_never_fetched_is_fetched_first_then_not_again(
    stored: HistoryStore, fetch: FetchStub
) -> None:
    result = run(CONTACT, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == NEWEST_FIRST  # nothing else on stdout
    assert fetch.calls == [CONTACT]

    again = run(CONTACT)
    assert again.exit_code == 0, again.output
    assert "5 of 5 entries" in again.stdout
    assert fetch.calls == [CONTACT]


def test_refresh_fetches_again_and_shows_the_new_entries(
    stored: HistoryStore, fetch: FetchStub
) -> None:
    stored.save(CONTACT, ENTRIES[:3])
    fetch.entries = ENTRIES  # Treazure has two more by now

    result = run(CONTACT, "--refresh")

    assert result.exit_code == 0, result.output
    assert fetch.calls == [CONTACT]
    assert "fetched from Treazure: 5 entries received, 2 new" in result.stdout
    assert in_order(result.stdout, "pts-0005", "pts-0004", "pts-0003")
    assert "5 of 5 entries" in result.stdout


def test_unknown_contact_exits_1(stored: HistoryStore, fetch: FetchStub) -> None:
    fetch.error = history.UnknownContact(f"contact_id: Treazure has no account {CONTACT}")

    result = run(CONTACT, "--json")

    assert result.exit_code == 1
    assert "unknown contact" in result.stderr and CONTACT in result.stderr
    assert result.stdout == ""
    assert stored.fetched(CONTACT) is None


def test_treazure_failing_exits_1_without_the_secret(
    stored: HistoryStore, fetch: FetchStub
) -> None:
    fetch.error = RemoteError("treazure", f"HTTP 503 [down] secret={CLIENT_SECRET}", status=503)

    result = run(CONTACT, "--refresh")

    assert result.exit_code == 1
    assert "Treazure: HTTP 503 [down]" in result.stderr
    assert CLIENT_SECRET not in result.output


@pytest.mark.parametrize("contact", ["not-a-guid", CONTACT[:-1], CONTACT + "0"])
def test_invalid_contact_id_exits_2_naming_it(
    stored: HistoryStore, fetch: FetchStub, contact: str
) -> None:
    result = run(contact, "--refresh")

    assert result.exit_code == 2
    assert "contact_id: must be a GUID" in result.stderr
    assert fetch.calls == []


@pytest.mark.parametrize(("args", "name"), [
    (("--count", "0"), "--count"), (("--count", "1001"), "--count"),
    (("--offset", "-1"), "--offset"),
])
def test_out_of_range_paging_exits_2(
    stored: HistoryStore, fetch: FetchStub, args: tuple[str, ...], name: str
) -> None:
    stored.save(CONTACT, ENTRIES)
    result = run(CONTACT, *args)

    assert result.exit_code == 2
    assert name in result.stderr
