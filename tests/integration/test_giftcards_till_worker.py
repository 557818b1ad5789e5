"""The till's operations through a real Celery worker against the Toggle simulator over
HTTP: one adjustment per reference, also when Toggle applied it and the answer was lost;
one reversal per reference; an unknown card refused in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from sims.harness import CeleryProcess
from tests.support.toggle_control import Toggle

pytestmark = pytest.mark.integration  # starts processes

CARD = "6301190000000010001"  # seeded in the simulator with 50.00
SHOWN = "6301 19•• •••• ••• 0001"


def call(client: Celery, task: str, **kwargs: Any) -> dict[str, Any]:
    return dict(client.send_task(f"pointsync.{task}", kwargs=kwargs).get(timeout=60))


def redeem(client: Celery, reference: str) -> dict[str, Any]:
    return call(client, "adjust_gift_card", card_reference=CARD, value="-5.00",
                site="london", reference=reference)


def test_a_redemption_and_its_reversal_happen_once_per_reference(
    toggle: Toggle, start_worker: Callable[..., CeleryProcess], client: Celery,
) -> None:
    start_worker()
    first, again = redeem(client, "it-till-1"), redeem(client, "it-till-1")
    assert first["state"] == again["state"] == "applied"
    assert first["balance"] == "45.00" and first["card_number"] == SHOWN
    created = toggle.created_by("it-till-1")
    assert created is not None and created["kind"] == "adjustment"
    assert len(created["line_items"]) == 1
    assert toggle.requests("createBalanceAdjustment") == 1
    assert toggle.card(CARD)["balance"] == 4500
    assert CARD not in str(first)

    back = call(client, "reverse_gift_card", reference="it-till-1", site="london")
    twice = call(client, "reverse_gift_card", reference="it-till-1", site="london")
    assert back["state"] == twice["state"] == "applied"
    assert back["reference"] == "it-till-1-REVERSAL"
    assert toggle.card(CARD)["balance"] == 5000
    assert toggle.requests("createReversal") == 1
    reversal = toggle.created_by("it-till-1-REVERSAL")
    assert reversal is not None and reversal["kind"] == "reversal"


def test_a_lost_answer_is_looked_up_not_resent_and_an_unknown_card_is_refused(
    toggle: Toggle, start_worker: Callable[..., CeleryProcess], client: Celery,
) -> None:
    start_worker()
    # Toggle applies the adjustment, then the connection closes before its answer.
    toggle.post("faults", {"target": "createBalanceAdjustment", "kind": "drop_after_apply"})
    outcome = redeem(client, "it-till-lost")
    assert outcome["state"] == "applied"
    assert outcome["balance"] == "45.00"
    created = toggle.created_by("it-till-lost")
    assert created is not None and len(created["line_items"]) == 1
    assert toggle.requests("createBalanceAdjustment") == 1
    assert toggle.card(CARD)["balance"] == 4500

    unknown = "6301190000009999999"  # the issuer's form, but no such card
    answer = call(client, "gift_card_balance", card_reference=unknown)
    assert answer["state"] == "unknown"
    assert "Toggle has no card 6301 19•• •••• ••• 9999" in answer["reason"]
    assert unknown not in str(answer)
