"""`pointsync relay …` on a SQLite file: events recorded through the flow's receive, their
deliveries moved as the deliverer moves them, the broker replaced by a recorder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.exceptions import OperationalError
from typer.testing import CliRunner, Result

from tests.support.relays import nector_body, nector_headers, toggle_body, toggle_headers
from tests.support.unit import cli_database
from worker.faces import runtime
from worker.faces.celery.app import app as celery_app
from worker.faces.cli.app import cli
from worker.flows.relays.receive import NECTOR, TOGGLE, receive
from worker.store.relays import FILTERED, Relays, delivery_key

FAILED_KEY = delivery_key(TOGGLE, "101", "atreemo")


class SentTasks:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    def __call__(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None,
                 **options: Any) -> SimpleNamespace:
        if self.error is not None:
            raise self.error
        self.calls.append((name, dict(kwargs or {})))
        return SimpleNamespace(id="task-1")


@pytest.fixture
def relays(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Relays]:
    """toggle 100 delivered (one lost answer), 101 failed, 102 received; nector d-1
    filtered, d-2 received."""
    for url in cli_database(clean_env, tmp_path):
        store = runtime.prepare_store(url)
        for event_id in (100, 101, 102):
            body = toggle_body(event_id, card=500 + event_id)
            receive(store, TOGGLE, body, toggle_headers(body))
        for delivery_id in ("d-1", "d-2"):
            body = nector_body(f"cust-{delivery_id}")
            receive(store, NECTOR, body, nector_headers(body, delivery_id))
        relays = Relays(store)
        settle(relays, delivery_key(TOGGLE, "100", "atreemo"), "delivered", lost_answers=1)
        settle(relays, FAILED_KEY, "failed")
        settle(relays, delivery_key(NECTOR, "d-1", "contlo"), FILTERED)
        yield relays


def settle(relays: Relays, key: str, state: str, lost_answers: int = 0) -> None:
    row = relays.outbox.claim(key, 30)
    assert row is not None and row.lease_until is not None
    for _ in range(lost_answers):
        relays.lost_answer(key, row.lease_until)
    if state == "failed":
        relays.fail(key, "HTTP 400: rejected", row.lease_until)
    else:
        relays.finish(key, row.lease_until, state)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    recorder = SentTasks()
    monkeypatch.setattr(celery_app, "send_task", recorder)
    return recorder


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["relay", *args])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_counts_each_route(relays: Relays) -> None:
    status = {line["route"]: line for line in as_json(run("status", "--json"))}

    toggle, nector = status["toggle-atreemo"], status["nector-contlo"]
    assert (toggle["received"], toggle["delivered"], toggle["filtered"], toggle["failed"],
            toggle["ambiguous"]) == (1, 1, 0, 1, 1)
    assert (nector["received"], nector["delivered"], nector["filtered"], nector["failed"],
            nector["ambiguous"]) == (1, 0, 1, 0, 0)
    assert toggle["oldest_undelivered_seconds"] >= 0


def test_status_names_every_route_before_any_event(clean_env: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    for _ in cli_database(clean_env, tmp_path):
        status = as_json(run("status", "--json"))
        assert [line["route"] for line in status] == ["nector-contlo", "toggle-atreemo"]
        assert all(line["oldest_undelivered_seconds"] is None and line["received"] == 0
                   for line in status)
        table = run("status")
        assert table.exit_code == 0 and "atreemo" in table.stdout and "contlo" in table.stdout


def test_list_filters_by_state_and_limits(relays: Relays) -> None:
    received = as_json(run("list", "--state", "received", "--json"))
    assert sorted(row["key"] for row in received) == [
        delivery_key(NECTOR, "d-2", "contlo"), delivery_key(TOGGLE, "102", "atreemo")]
    assert len(as_json(run("list", "--limit", "2", "--json"))) == 2
    assert len(as_json(run("list", "--json"))) == 5
    assert "body" not in received[0]


def test_list_refuses_an_unknown_state(relays: Relays) -> None:
    result = run("list", "--state", "lost")
    assert result.exit_code == 1 and "state: one of" in result.stderr


def test_failed_and_show(relays: Relays) -> None:
    failed = as_json(run("failed", "--json"))
    assert [(row["key"], row["reason"]) for row in failed] == [(FAILED_KEY, "HTTP 400: rejected")]
    shown = as_json(run("show", FAILED_KEY, "--json"))
    assert shown["state"] == "failed" and shown["subject"] == failed[0]["subject"]
    assert FAILED_KEY in run("show", FAILED_KEY).stdout
    missing = run("show", "toggle:999:atreemo")
    assert missing.exit_code == 1 and "no relay delivery" in missing.stderr


def test_replay_reopens_and_queues_the_subject(relays: Relays, sent: SentTasks) -> None:
    subject = relays.get(FAILED_KEY).subject  # type: ignore[union-attr]
    replayed = as_json(run("replay", FAILED_KEY, "--json"))

    assert replayed["state"] == "received" and replayed["attempts"] == 0 and replayed["queued"]
    assert sent.calls == [("pointsync.relay_subject", {"source": TOGGLE, "subject": subject})]
    row = relays.get(FAILED_KEY)
    assert row is not None and row.state == "received" and row.finished_at is None


def test_replay_of_a_delivery_that_is_not_failed_changes_nothing(relays: Relays,
                                                                 sent: SentTasks) -> None:
    key = delivery_key(TOGGLE, "100", "atreemo")
    result = run("replay", key)
    assert result.exit_code == 1 and "not failed" in result.stderr
    assert sent.calls == [] and relays.get(key).state == "delivered"  # type: ignore[union-attr]


def test_replay_with_the_broker_down_leaves_it_to_the_sweep(
        relays: Relays, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_app, "send_task", SentTasks(OperationalError("down")))
    result = run("replay", FAILED_KEY)
    assert result.exit_code == 0, result.output
    assert "left to the sweep" in result.stdout
    assert relays.get(FAILED_KEY).state == "received"  # type: ignore[union-attr]
