"""`pointsync giftcard …`: the CLI on a SQLite file. Issuing runs the real flow against a
respx Toggle (tests/support/giftcards.FakeToggle); the till and points → card operations run
stand-in flows (their own tests cover them) so what is checked here is the CLI's: arguments
refused before any call, outcomes shown, exit codes, list/show/failed/replay, and no full
card number or PIN printed except `show --reveal` and the in-venue PIN, once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.support.giftcard_faces import TOGGLE_ENV, runner
from tests.support.giftcards import FakeToggle
from tests.support.unit import cli_database
from worker.faces import runtime
from worker.faces.cli import giftcards as giftcard_cli
from worker.faces.cli.app import cli
from worker.store.giftcards import Orders, Redemptions
from worker.systems.toggle.cards import mask_card_number

CARD = "6301190000000010001"
CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"


@pytest.fixture
def database_file(env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    yield from cli_database(env, tmp_path, **TOGGLE_ENV)


@pytest.fixture
def toggle(database_file: str, monkeypatch: pytest.MonkeyPatch) -> FakeToggle:
    """The CLI's in-process runs are answered by the fake Toggle."""
    fake = FakeToggle()
    monkeypatch.setattr(giftcard_cli, "run_remote", runner(fake))
    return fake


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["giftcard", *args])


def issued_numbers(fake: FakeToggle) -> list[str]:
    return [item["Card"]["card_reference"] for order in fake.orders.values()
            for item in order["LineItems"]]


def assert_no_secret(text: str, fake: FakeToggle) -> None:
    for number in [*issued_numbers(fake), CARD]:
        assert number not in text
    for pin in fake.pins:
        assert f"PIN {pin}" not in text


# -- issue --------------------------------------------------------------------------------


def test_issue_in_venue_shows_the_pin_once_and_the_number_masked(toggle) -> None:
    result = run("issue", "25.00", "--reference", "kiosk-1", "--message", "Thank you")
    assert result.exit_code == 0, result.output
    [number] = issued_numbers(toggle)
    [pin] = toggle.pins
    assert result.output.count(pin) == 1 and f"PIN {pin}" in result.output
    assert number not in result.output
    assert mask_card_number(number) in result.output
    [sent] = toggle.named("CreateOrder")
    assert sent["merchant_transaction_reference"] == "kiosk-1"
    assert sent["order_items"][0]["custom_price_modifier_value"] == 2500
    # The same reference again: nothing sent, no PIN (none is kept), the same card.
    again = run("issue", "25.00", "--reference", "kiosk-1", "--message", "Thank you")
    assert again.exit_code == 0, again.output
    assert len(toggle.named("CreateOrder")) == 1
    assert pin not in again.output and mask_card_number(number) in again.output


def test_issue_by_email_prints_json_without_a_pin(toggle) -> None:
    result = run("issue", "10", "--email", "guest@example.com", "--reference", "mail-1",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.splitlines()[-1])
    assert data["state"] == "issued" and data["value"] == "10.00"
    assert "pin" not in data
    assert toggle.named("CreateOrder")[0]["order_items"][0]["fulfilment_email"] == \
        "guest@example.com"


@pytest.mark.parametrize(("args", "named"), [
    (("issue", "0"), "value:"),
    (("issue", "10.001"), "value:"),
    (("issue", "10", "--email", "not-an-address"), "email:"),
])
def test_bad_arguments_are_refused_before_any_call(toggle, args, named) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert f"pointsync: {named}" in result.output
    assert toggle.calls == []


def test_a_refused_card_fails_with_toggles_words(toggle) -> None:
    toggle.faults.append("Product is not available")
    result = run("issue", "5", "--reference", "refused-1")
    assert result.exit_code == 1
    assert "Product is not available" in result.output


# -- the rows -----------------------------------------------------------------------------


def test_list_show_reveal_failed_and_replay(toggle, database_file) -> None:
    assert run("issue", "5", "--reference", "r-ok").exit_code == 0
    toggle.faults.append("Product is not available")
    assert run("issue", "7", "--reference", "r-bad").exit_code == 1
    [number] = issued_numbers(toggle)

    listed = run("list")
    assert listed.exit_code == 0 and "r-ok" in listed.output and "r-bad" in listed.output
    failed = run("failed", "--json")
    assert [row["reference"] for row in json.loads(failed.output)] == ["r-bad"]
    shown = run("show", "r-ok")
    assert shown.exit_code == 0 and mask_card_number(number) in shown.output
    for output in (listed.output, failed.output, shown.output):
        assert_no_secret(output, toggle)
    revealed = run("show", "r-ok", "--reveal", "--json")
    assert json.loads(revealed.output)["card_number_full"] == number
    assert run("show", "nothing-here").exit_code == 1

    assert "not failed" in run("replay", "r-ok").output
    replayed = run("replay", "r-bad")
    assert replayed.exit_code == 0, replayed.output
    assert Orders(runtime.prepare_store(database_file)).get("r-bad").state == "issued"
    assert len(toggle.named("CreateOrder")) == 3  # the first, the refused, the replay


def test_replay_of_a_refunded_redemption_is_refused_and_sends_nothing(
        toggle, database_file) -> None:
    """A card Toggle refused for a redemption leaves a failed order under the redemption's
    reference, and the points were given back: issuing that card now would give the guest
    both."""
    store = runtime.prepare_store(database_file)
    Redemptions(store).record("red-1", CONTACT, 1000, 1000, None, "card", "cli")
    Redemptions(store).outbox.move("red-1", None, state="refunded", reason="Product gone")
    Orders(store).record("red-1", 1000, None, None, None, "redemption")
    Orders(store).outbox.fail("red-1", "Product gone")

    result = run("replay", "red-1")
    assert result.exit_code == 1
    assert "red-1 is refunded" in result.output
    assert toggle.calls == []
    assert Orders(store).get("red-1").state == "failed"
    assert Redemptions(store).get("red-1").state == "refunded"


# -- the till and points → card (stand-in flows) ------------------------------------------


class Outcome(SimpleNamespace):
    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@pytest.fixture
def till_calls(toggle, monkeypatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    async def adjust(parts, request, source):
        calls.append(("adjust", request))
        return Outcome(reference=request.reference, state="applied",
                       card_number=mask_card_number(request.card_reference),
                       value=f"{request.value_minor / 100:.2f}", site=request.site)

    async def balance(parts, card):
        calls.append(("balance", card))
        return Outcome(state="ok", card_number=mask_card_number(card), balance="50.00")

    async def reverse(parts, reference, site, source):
        calls.append(("reverse", (reference, site)))
        return Outcome(reference=f"{reference}-REVERSAL", state="failed",
                       reason="Reversal not possible")

    async def redeem(parts, request, source):
        calls.append(("redeem", request))
        return Outcome(reference=request.reference, state="card_pending", retry_in=5.0)

    monkeypatch.setattr(giftcard_cli.till, "adjust_gift_card", adjust)
    monkeypatch.setattr(giftcard_cli.till, "card_balance", balance)
    monkeypatch.setattr(giftcard_cli.till, "reverse_gift_card", reverse)
    monkeypatch.setattr(giftcard_cli.redeem, "redeem_points_for_gift_card", redeem)
    return calls


def test_redeem_takes_off_and_topup_adds(till_calls) -> None:
    spent = run("redeem", CARD, "12.50", "--site", "london", "--reference", "till-1")
    topped = run("topup", CARD, "20", "--site", "london")
    assert spent.exit_code == 0 and topped.exit_code == 0, spent.output + topped.output
    (_, first), (_, second) = till_calls
    assert (first.value_minor, first.site_reference, first.reference) == \
        (-1250, "EPOS-LDN-1", "till-1")
    assert second.value_minor == 2000
    assert_no_secret(spent.output + topped.output, FakeToggle())


@pytest.mark.parametrize(("args", "named"), [
    (("redeem", CARD, "5", "--site", "paris"), "site:"),
    (("redeem", "1234", "5", "--site", "london"), "card"),
    (("topup", CARD, "-5", "--site", "london"), "amount:"),
])
def test_till_arguments_are_refused_before_any_call(till_calls, args, named) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert f"pointsync: {named}" in result.output
    assert till_calls == []


def test_balance_and_reverse_and_redeem_points(till_calls) -> None:
    shown = run("balance", CARD)
    assert shown.exit_code == 0 and "50.00" in shown.output
    assert_no_secret(shown.output, FakeToggle())
    reversed_ = run("reverse", "till-1", "--site", "london")
    assert reversed_.exit_code == 1 and "Reversal not possible" in reversed_.output
    pending = run("redeem-points", CONTACT, "500", "5.00", "--email", "guest@example.com")
    assert pending.exit_code == giftcard_cli.UNFINISHED_EXIT, pending.output
    assert "sweep goes on with it" in pending.output
    assert [name for name, _ in till_calls] == ["balance", "reverse", "redeem"]
