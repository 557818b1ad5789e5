"""`./dev demo`'s relay part (sims/demo_relays.py) on a real worker, web process and the
simulators: what it returns and what it prints, not just that it ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from sims.demo_relays import relays
from sims.harness import CeleryProcess, Simulators

pytestmark = pytest.mark.integration  # starts processes


def test_the_demo_relays_each_event_and_shows_where_it_ended(
    sims: Simulators, worker_env: dict[str, str], start_worker: Callable[..., CeleryProcess],
    tmp_path: Path,
) -> None:
    start_worker()
    console = Console(record=True, width=100)

    demo = relays(console, sims, worker_env, tmp_path)

    by = demo.by_label()
    assert demo.settled
    assert {label: event.state for label, event in by.items()} == {
        "card, later": "delivered", "card, earlier": "delivered", "order": "delivered",
        "receipt email": "filtered", "coins": "delivered", "coupon": "delivered",
        "no contact": "failed"}
    # The card's later event arrived first and was refused once (429, Retry-After 3 s): it
    # went out after the earlier one, in the order Toggle created them.
    assert by["card, later"].row is not None and by["card, later"].row.attempts == 2
    card = [str(item["id"]) for item in demo.atreemo if item["type"] != "order.created"]
    assert card == [by["card, earlier"].event_id, by["card, later"].event_id]
    # The order is another subject: it may go before, between or after the card's events.
    assert [str(item["id"]) for item in demo.atreemo if item["type"] == "order.created"] == [
        by["order"].event_id]
    assert len(demo.atreemo) == 3
    # The repeat was answered 200 and recorded nothing; the email trigger never went out.
    assert by["order"].answers == [200, 200] and by["order"].duplicate
    assert [(item["event"], item["email"]) for item in demo.contlo] == [
        ("Wallet Coins Rewarded", "asha@example.in"), ("Coupon Is Created", "asha@example.in")]
    no_contact = by["no contact"].row
    assert no_contact is not None and no_contact.attempts == 0
    assert "neither user_email nor user_mobile" in (no_contact.reason or "")
    assert demo.ok

    printed = console.export_text()
    assert "relayed events (where each ended)" in printed
    received = printed[printed.index("what Atreemo received, in order:"):]
    assert received.index(": card, earlier)") < received.index(": card, later)")
    for line in ("1. Wallet Coins Rewarded for asha@example.in",
                 "2. Coupon Is Created for asha@example.in",
                 "no contact: no contact: the event has neither user_email nor user_mobile"):
        assert line in printed, printed
    assert printed.rstrip().endswith("— OK"), printed
