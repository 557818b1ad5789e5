"""The gift-card tasks, run eagerly (Task.apply) on a SQLite file: issue_gift_card against a
respx Toggle (the real flow), the till and points → card tasks with stand-in flows. A call
without reference acts once however often its message is delivered; no result holds a PIN
or a full card number; bad arguments fail before any call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.giftcard_faces import TOGGLE_ENV, runner
from tests.support.giftcards import FakeToggle
from tests.support.unit import cli_database
from worker.base.arguments import InvalidArgument
from worker.faces.celery import giftcard_tasks as tasks
from worker.faces.celery import tasks as booking_tasks
from worker.faces.celery.app import app as celery_app
from worker.flows.giftcards import issue, redeem, till
from worker.systems.toggle.cards import mask_card_number

CARD = "6301190000000010001"
CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
NAMES = ("pointsync.issue_gift_card", "pointsync.redeem_points_for_gift_card",
         "pointsync.adjust_gift_card", "pointsync.reverse_gift_card",
         "pointsync.gift_card_balance", "pointsync.sweep_giftcards")


@pytest.fixture
def toggle(env: pytest.MonkeyPatch, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeToggle]:
    fake = FakeToggle()
    monkeypatch.setattr(tasks, "run_with_parts", runner(fake))
    yield from _with_database(env, tmp_path, fake)


def _with_database(env: Any, tmp_path: Path, fake: FakeToggle) -> Iterator[FakeToggle]:
    for _ in cli_database(env, tmp_path, **TOGGLE_ENV):
        yield fake


def _no_secret(result: Any, fake: FakeToggle) -> None:
    text = repr(result)
    for order in fake.orders.values():
        for item in order["LineItems"]:
            assert item["Card"]["card_reference"] not in text
            assert item["Card"]["pin"] not in text
    assert CARD not in text


def test_the_tasks_are_registered_under_the_interfaces_names() -> None:
    assert set(NAMES) <= set(celery_app.tasks)


def test_a_redelivered_call_without_reference_issues_one_card(toggle) -> None:
    first = tasks.issue_gift_card.apply(kwargs={"value": "15.00"}, task_id="t-1").get()
    again = tasks.issue_gift_card.apply(kwargs={"value": "15.00"}, task_id="t-1").get()
    assert first["reference"] == again["reference"] == "gc-t-1"
    assert first["state"] == "issued" and again["duplicate"] is True
    assert len(toggle.named("CreateOrder")) == 1
    [number] = [item["Card"]["card_reference"] for o in toggle.orders.values()
                for item in o["LineItems"]]
    assert first["card_number"] == mask_card_number(number)
    assert "pin" not in first
    _no_secret([first, again], toggle)
    # Another call (another task id) is another card.
    other = tasks.issue_gift_card.apply(kwargs={"value": "15.00"}, task_id="t-2").get()
    assert other["reference"] == "gc-t-2" and len(toggle.named("CreateOrder")) == 2


def test_bad_arguments_fail_the_task_before_any_call(toggle) -> None:
    result = tasks.issue_gift_card.apply(kwargs={"value": "-1"}, task_id="t-3")
    assert isinstance(result.result, InvalidArgument)
    assert str(result.result).startswith("value:")
    assert toggle.calls == []


class Outcome(SimpleNamespace):
    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@pytest.fixture
def stand_ins(toggle, monkeypatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    async def adjust(parts, request, source):
        calls.append(("adjust", request))
        return Outcome(reference=request.reference, state="applied", retry_in=None,
                       card_number=mask_card_number(request.card_reference))

    async def balance(parts, card):
        calls.append(("balance", card))
        return Outcome(state="ok", card_number=mask_card_number(card), balance="50.00")

    async def reverse(parts, reference, site, source):
        calls.append(("reverse", (reference, site, source)))
        return Outcome(reference=f"{reference}-REVERSAL", state="applied", retry_in=None)

    async def redeem_card(parts, request, source):
        calls.append(("redeem", request))
        return Outcome(reference=request.reference, state="done", retry_in=None,
                       points_state="applied")

    monkeypatch.setattr(till, "adjust_gift_card", adjust)
    monkeypatch.setattr(till, "card_balance", balance)
    monkeypatch.setattr(till, "reverse_gift_card", reverse)
    monkeypatch.setattr(redeem, "redeem_points_for_gift_card", redeem_card)
    return calls


def test_till_tasks_validate_and_mask(stand_ins, toggle) -> None:
    adjusted = tasks.adjust_gift_card.apply(
        kwargs={"card_reference": CARD, "value": "-4.50", "site": "london"},
        task_id="t-4").get()
    assert adjusted["reference"] == "gca-t-4"
    (_, request), = stand_ins
    assert (request.value_minor, request.site_reference) == (-450, "EPOS-LDN-1")
    balance = tasks.gift_card_balance.apply(kwargs={"card_reference": CARD}).get()
    reversed_ = tasks.reverse_gift_card.apply(
        kwargs={"reference": "gca-t-4", "site": "london"}).get()
    assert reversed_["reference"] == "gca-t-4-REVERSAL"
    _no_secret([adjusted, balance, reversed_], toggle)

    unknown_site = tasks.adjust_gift_card.apply(
        kwargs={"card_reference": CARD, "value": "5", "site": "paris"}, task_id="t-5")
    assert str(unknown_site.result).startswith("site:")
    assert len(stand_ins) == 3  # the refused call reached no flow


def test_redeem_points_takes_its_reference_from_the_task(stand_ins) -> None:
    done = tasks.redeem_points_for_gift_card.apply(
        kwargs={"contact_id": CONTACT, "points": 500, "value": "5.00",
                "email": "guest@example.com"}, task_id="t-6").get()
    assert done["reference"] == "gcr-t-6"
    (_, request), = stand_ins
    assert (request.points_cents, request.value_minor) == (50000, 500)


def test_an_outcome_due_again_soon_is_sent_again_as_the_same_call(toggle, monkeypatch) -> None:
    sent: list[dict[str, Any]] = []

    async def pending(parts, request, source):
        return Outcome(reference=request.reference, state="received", retry_in=2.0)

    monkeypatch.setattr(issue, "issue_gift_card", pending)
    monkeypatch.setattr(tasks.issue_gift_card, "apply_async",
                        lambda **options: sent.append(options))
    tasks.issue_gift_card.apply(kwargs={"value": "5"}, task_id="t-7").get()
    [options] = sent
    assert options["kwargs"]["reference"] == "gc-t-7" and options["countdown"] == 2.0


def test_a_redemption_whose_points_are_booked_schedules_the_engage_drain(
    toggle, monkeypatch
) -> None:
    # The card waits for the points' new balance to reach Engage: the task starts the drain
    # itself, as a booking does, rather than leaving it to the sweep.
    drains: list[dict[str, Any]] = []

    async def booked(parts, request, source):
        return Outcome(reference=request.reference, state="card_issued", retry_in=None,
                       points_state="booked")

    monkeypatch.setattr(redeem, "redeem_points_for_gift_card", booked)
    monkeypatch.setattr(booking_tasks.push_points, "apply_async", lambda **o: drains.append(o))
    tasks.redeem_points_for_gift_card.apply(kwargs={
        "contact_id": "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f", "points": "10", "value": "1",
        "email": "guest@example.com"}, task_id="t-9").get()
    assert len(drains) == 1


def test_toggles_outcomes_are_counted_once_a_task_loads_the_runtime(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The task modules no longer import Toggle's session (the worker's main process runs no
    # task): the runner registers its outcome counter for /metrics when a task first runs.
    from worker.base import telemetry
    from worker.faces import runtime
    from worker.faces.celery import lazy
    from worker.systems.toggle import session

    monkeypatch.setattr(telemetry, "_outcome_tallies", {})
    monkeypatch.setattr(runtime, "run_with_parts", lambda work: "ran")
    lazy._count_toggle_outcomes.cache_clear()
    try:
        assert lazy.run_with_parts(lambda parts: None) == "ran"
        assert telemetry._outcome_tallies == {"toggle": session.OUTCOMES}
    finally:
        lazy._count_toggle_outcomes.cache_clear()
