"""`pointsync points …`: the CLI's own logic on a SQLite file, with the broker replaced by a
recorder (no task runs; what would be enqueued is checked)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.exceptions import OperationalError
from typer.testing import CliRunner, Result

from tests.support.unit import cli_database
from worker.base.point_request import PointRequest
from worker.faces import runtime
from worker.faces.celery.app import app as celery_app
from worker.faces.cli.app import cli
from worker.store.ledger import Ledger

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
ADD_POINTS = "pointsync.add_points"


class SentTasks:
    """Stands in for `app.send_task`: records (task name, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None,
                 **options: Any) -> SimpleNamespace:
        self.calls.append((name, dict(kwargs or {})))
        return SimpleNamespace(id=f"task-{len(self.calls)}")


@pytest.fixture
def database_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    yield from cli_database(clean_env, tmp_path)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    recorder = SentTasks()
    monkeypatch.setattr(celery_app, "send_task", recorder)
    return recorder


@pytest.fixture
def ledger(database_file: str) -> Ledger:
    return Ledger(runtime.prepare_store(database_file))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def last_json(result: Result) -> Any:
    """The JSON document a `--json` command printed last (notes may come before it)."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def add(*extra: str, amount: str = "2.50", description: str = "Birthday bonus") -> Result:
    return run("points", "add", CONTACT, amount, "--description", description, "--no-wait",
               "--json", *extra)


def recorded(ledger: Ledger, reference: str, cents: int = 250) -> None:
    _, created = ledger.record(PointRequest(CONTACT, cents, "by hand", reference), "task")
    assert created


# -- points add -----------------------------------------------------------------------------


def test_add_records_a_cli_row_and_enqueues_the_task(ledger: Ledger, sent: SentTasks) -> None:
    result = add()
    assert result.exit_code == 0, result.output
    shown = last_json(result)
    reference = shown["reference"]
    assert reference.startswith("pts-")
    assert (shown["state"], shown["source"], shown["amount"]) == ("received", "cli", "2.50")

    row = ledger.get(reference)
    assert row is not None
    assert (row.source, row.state, row.contact_id, row.amount_cents, row.description) == \
        ("cli", "received", CONTACT, 250, "Birthday bonus")
    assert sent.calls == [(ADD_POINTS, {"contact_id": CONTACT, "amount": "2.50",
                                        "description": "Birthday bonus",
                                        "reference": reference})]


def test_add_books_a_redemption_given_after_double_dash(
    ledger: Ledger, sent: SentTasks
) -> None:
    result = run("points", "add", "--description", "Redeemed", "--no-wait", "--json",
                 "--reference", "redeem-1", "--", CONTACT, "-10.50")
    assert result.exit_code == 0, result.output
    row = ledger.get("redeem-1")
    assert row is not None and row.amount_cents == -1050
    assert sent.calls[0][1]["amount"] == "-10.50"


def test_add_books_a_redemption_given_as_its_help_shows(ledger: Ledger, sent: SentTasks) -> None:
    result = add("--reference", "redeem-1", amount="-10.50")
    assert result.exit_code == 0, result.output


def test_add_refuses_a_long_description_before_anything_happens(
    ledger: Ledger, sent: SentTasks
) -> None:
    result = add(description="d" * 101)
    assert result.exit_code == 2
    assert "Invalid value: description:" in result.stderr
    assert ledger.counts_by_state() == {}
    assert sent.calls == []


def test_add_with_the_same_reference_enqueues_again_but_records_once(
    ledger: Ledger, sent: SentTasks
) -> None:
    first = add("--reference", "cli-1")
    second = add("--reference", "cli-1")
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert "recorded before" in second.stdout
    assert last_json(second)["reference"] == "cli-1"
    assert ledger.counts_by_state() == {"received": 1}
    assert [kwargs["reference"] for _, kwargs in sent.calls] == ["cli-1", "cli-1"]


def test_add_refuses_a_reference_used_for_another_transaction(
    ledger: Ledger, sent: SentTasks
) -> None:
    assert add("--reference", "cli-1").exit_code == 0
    result = add("--reference", "cli-1", amount="3.00")
    assert result.exit_code == 2
    assert "Invalid value: reference:" in result.stderr
    row = ledger.get("cli-1")
    assert row is not None and row.amount_cents == 250
    assert len(sent.calls) == 1


def test_add_of_a_finished_reference_enqueues_nothing(ledger: Ledger, sent: SentTasks) -> None:
    assert add("--reference", "done").exit_code == 0
    ledger.fail("done", "treazure: account unknown")
    result = add("--reference", "done")
    assert result.exit_code == 1
    assert last_json(result)["state"] == "failed"
    assert len(sent.calls) == 1  # only the first add's


def test_add_still_records_when_the_broker_is_down(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    result = add("--reference", "offline-1")
    assert result.exit_code == 0, result.output
    assert "could not enqueue" in result.stdout and "OperationalError" in result.stdout
    row = ledger.get("offline-1")
    assert row is not None and row.state == "received"  # the sweep finishes it


# -- points failed / list / show --------------------------------------------------------------


def test_failed_lists_only_failed_rows(ledger: Ledger, sent: SentTasks) -> None:
    for ref in ("ok-1", "bad-1", "bad-2", "ok-2"):
        recorded(ledger, ref)
    ledger.fail("bad-1", "treazure: account unknown")
    ledger.fail("bad-2", "engage: contact unknown")
    ledger.booked("ok-2", 1000, 1)

    result = run("points", "failed", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["reference"]: r["reason"] for r in rows} == {
        "bad-1": "treazure: account unknown", "bad-2": "engage: contact unknown"}
    assert {r["state"] for r in rows} == {"failed"}
    assert sent.calls == []


def test_list_filters_by_state(ledger: Ledger) -> None:
    for ref in ("r-1", "b-1"):
        recorded(ledger, ref)
    ledger.booked("b-1", 1000, 1)
    result = run("points", "list", "--state", "booked", "--json")
    assert result.exit_code == 0, result.output
    assert [(r["reference"], r["balance"]) for r in json.loads(result.stdout)] == \
        [("b-1", "10.00")]
    every = json.loads(run("points", "list", "--json").stdout)
    assert {r["reference"] for r in every} == {"r-1", "b-1"}


def test_show_prints_one_row_and_an_unknown_reference_exits_1(ledger: Ledger) -> None:
    recorded(ledger, "t-1", cents=-1050)
    result = run("points", "show", "t-1", "--json")
    assert result.exit_code == 0, result.output
    shown = last_json(result)
    assert (shown["reference"], shown["state"], shown["amount"], shown["contact_id"],
            shown["description"], shown["attempts"]) == \
        ("t-1", "received", "-10.50", CONTACT, "by hand", 0)

    missing = run("points", "show", "nope", "--json")
    assert missing.exit_code == 1
    assert "no transaction" in missing.stdout


# -- points replay ------------------------------------------------------------------------------


def test_replay_of_a_booked_then_failed_row_goes_back_to_booked(
    ledger: Ledger, sent: SentTasks
) -> None:
    recorded(ledger, "t-1")
    ledger.booked("t-1", 7_500, 1_000)
    ledger.fail("t-1", "engage: contact unknown")

    result = run("points", "replay", "t-1", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result)["state"] == "booked"
    row = ledger.get("t-1")
    assert row is not None
    assert (row.state, row.balance_cents, row.reason, row.attempts) == ("booked", 7_500, None, 0)
    assert sent.calls == [(ADD_POINTS, {"contact_id": CONTACT, "amount": "2.50",
                                        "description": "by hand", "reference": "t-1"})]


def test_replay_of_a_row_never_booked_goes_back_to_received(
    ledger: Ledger, sent: SentTasks
) -> None:
    recorded(ledger, "t-1")
    ledger.sending("t-1")
    ledger.fail("t-1", "treazure: gave up")

    result = run("points", "replay", "t-1", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    row = ledger.get("t-1")
    assert row is not None
    assert (row.state, row.attempts, row.reason) == ("received", 0, None)
    assert [name for name, _ in sent.calls] == [ADD_POINTS]


def test_replay_refuses_a_row_that_is_not_failed(ledger: Ledger, sent: SentTasks) -> None:
    recorded(ledger, "t-1")
    result = run("points", "replay", "t-1", "--no-wait")
    assert result.exit_code == 1
    assert "not failed" in result.stdout
    row = ledger.get("t-1")
    assert row is not None and row.state == "received"
    assert run("points", "replay", "nope", "--no-wait").exit_code == 1
    assert sent.calls == []


def test_replay_refuses_a_row_recorded_as_invalid(ledger: Ledger, sent: SentTasks) -> None:
    ledger.record_invalid("evt-bad", "abc", None, "webhook", "contact_id: must be a GUID")
    result = run("points", "replay", "evt-bad", "--no-wait")
    assert result.exit_code == 1
    assert "invalid" in result.stdout
    row = ledger.get("evt-bad")
    assert row is not None and row.state == "failed"
    assert sent.calls == []
