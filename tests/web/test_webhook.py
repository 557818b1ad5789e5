"""POST /webhooks/engage: Svix verification, the ledger row first, then the task."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.web import CONTACT, OTHER_SECRET, EnqueueStub, event, signed
from worker.base.settings import WebSettings
from worker.faces.runtime import prepare_store
from worker.store.ledger import Ledger

URL = "/webhooks/engage"


async def deliver(client: TestClient, body: bytes, **sign: object) -> tuple[int, dict]:
    response = await client.post(URL, data=body, headers=signed(body, **sign))
    return response.status, await response.json()


@pytest.mark.parametrize(("amount", "cents", "sent"), [
    (25, 2500, "25.00"), (12.5, 1250, "12.50"), (-10, -1000, "-10.00"), (0.1, 10, "0.10"),
])
async def test_valid_delivery_is_recorded_then_queued_once(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub, amount: float, cents: int,
    sent: str,
) -> None:
    status, answer = await deliver(client, event("evt_1", amount=amount))

    assert (status, answer) == (202, {"reference": "evt_1", "state": "received",
                                      "duplicate": False})
    row = ledger.get("evt_1")
    assert row is not None
    assert (row.state, row.source, row.contact_id, row.amount_cents, row.description) == (
        "received", "webhook", CONTACT, cents, "Review bonus")
    # Exact decimal text (never a float) that the task re-validates to the same cents.
    assert enqueue.calls == [{"contact_id": CONTACT, "amount": sent,
                              "description": "Review bonus", "reference": "evt_1"}]


async def test_tampered_body_is_refused_and_nothing_recorded(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    headers = signed(event("evt_1", amount=25))
    response = await client.post(URL, data=event("evt_1", amount=2500), headers=headers)

    assert response.status == 401
    assert (await response.json())["error"].startswith("signature:")
    assert ledger.get("evt_1") is None
    assert enqueue.calls == []


async def test_wrong_secret_is_refused(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    status, answer = await deliver(client, event("evt_1"), secret=OTHER_SECRET)

    assert status == 401
    assert "does not match" in answer["error"]
    assert ledger.get("evt_1") is None
    assert enqueue.calls == []


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6)])
async def test_timestamp_more_than_five_minutes_off_is_refused(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub, age: timedelta
) -> None:
    status, answer = await deliver(client, event("evt_1"), age=age)

    assert status == 401
    assert answer["error"].startswith("timestamp: more than 5 minutes off")
    assert ledger.get("evt_1") is None
    assert enqueue.calls == []


async def test_timestamp_four_minutes_old_is_accepted(
    client: TestClient, ledger: Ledger
) -> None:
    status, _ = await deliver(client, event("evt_1"), age=timedelta(minutes=4))

    assert status == 202
    assert ledger.get("evt_1") is not None


@pytest.mark.parametrize(("headers", "error"), [
    ({}, "signature: missing header svix-id, svix-timestamp, svix-signature"),
    ({"svix-signature": "v1"}, "signature: malformed svix-signature header"),
    ({"svix-timestamp": "soon"}, "timestamp: svix-timestamp is not a Unix time"),
])
async def test_broken_signature_headers_are_refused_not_crashed(
    client: TestClient, ledger: Ledger, headers: dict[str, str], error: str
) -> None:
    body = event("evt_1")
    sent = signed(body) if headers else {}
    response = await client.post(URL, data=body, headers={**sent, **headers})

    assert response.status == 401
    assert (await response.json()) == {"error": error}
    assert ledger.get("evt_1") is None


async def test_non_utf8_body_is_refused(client: TestClient) -> None:
    body = b'{"id": "evt_1", "x": "\xff"}'
    headers = signed(event("evt_1"))  # any headers: the body cannot even be checked
    response = await client.post(URL, data=body, headers=headers)

    assert response.status == 401
    assert "not UTF-8" in (await response.json())["error"]


async def test_redelivery_answers_duplicate_and_books_nothing_new(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    body = event("evt_1")
    first = await deliver(client, body)
    # Svix re-sends the same message id with a fresh timestamp and signature.
    again = await deliver(client, body, age=timedelta(seconds=30))

    assert first == (202, {"reference": "evt_1", "state": "received", "duplicate": False})
    assert again == (202, {"reference": "evt_1", "state": "received", "duplicate": True})
    assert [row.reference for row in ledger.listing()] == ["evt_1"]
    # Still open, so re-queued (the task's lease makes that harmless), for the same row only.
    assert {call["reference"] for call in enqueue.calls} == {"evt_1"}


async def test_redelivery_of_a_finished_transaction_queues_nothing(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    body = event("evt_1")
    await deliver(client, body)
    ledger.booked("evt_1", balance_cents=12_500, mutated_us=1)
    ledger.applied(["evt_1"], [(CONTACT, 12_500, 1)])

    status, answer = await deliver(client, body)

    assert (status, answer) == (202, {"reference": "evt_1", "state": "applied",
                                      "duplicate": True})
    assert len(enqueue.calls) == 1  # the first delivery's only


async def test_same_reference_for_a_different_amount_conflicts(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    await deliver(client, event("evt_1", amount=25))
    status, answer = await deliver(client, event("evt_1", amount=30))

    assert (status, answer) == (
        409, {"error": "reference: already used for a different transaction"})
    row = ledger.get("evt_1")
    assert row is not None and row.amount_cents == 2500
    assert len(enqueue.calls) == 1


async def test_invalid_reuse_of_a_valid_reference_conflicts(
    client: TestClient, ledger: Ledger
) -> None:
    await deliver(client, event("evt_1"))
    status, answer = await deliver(client, event("evt_1", description="x" * 101))

    assert (status, answer) == (
        409, {"error": "reference: already used for a different transaction"})
    row = ledger.get("evt_1")
    assert row is not None and row.state == "received"


@pytest.mark.parametrize(("body", "error"), [
    (b"{not json", "body: not valid JSON"),
    (b'{"eventType": "loyalty.addPoints", "payload": {"amount": NaN}}',
     "body: not valid JSON"),
    (b'["loyalty.addPoints"]', "body: must be a JSON object"),
    (b'{"id": "evt_1", "payload": {}}', "eventType: missing or not a string"),
    (b'{"id": "evt_1", "eventType": "loyalty.addPoints"}', "payload: missing or not an object"),
    (b'{"id": "evt_1", "eventType": "loyalty.addPoints", "payload": "abc"}',
     "payload: missing or not an object"),
])
async def test_signed_body_that_does_not_parse_is_a_400(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub, body: bytes, error: str
) -> None:
    status, answer = await deliver(client, body)

    assert (status, answer) == (400, {"error": error})
    assert ledger.listing() == []
    assert enqueue.calls == []


async def test_encrypted_payload_is_refused_by_name(client: TestClient, ledger: Ledger) -> None:
    body = (b'{"id": "evt_1", "eventType": "loyalty.addPoints", "isEncrypted": true, '
            b'"payload": "ZW5jcnlwdGVk"}')
    status, answer = await deliver(client, body)

    assert status == 400
    assert answer["error"].startswith("payload: encrypted")
    assert ledger.listing() == []


async def test_reference_falls_back_to_svix_id(client: TestClient, ledger: Ledger) -> None:
    status, answer = await deliver(client, event(None), msg_id="msg_7Zx")

    assert (status, answer["reference"]) == (202, "msg_7Zx")
    assert ledger.get("msg_7Zx") is not None


async def test_reference_that_breaks_the_rules_is_a_400(
    client: TestClient, ledger: Ledger
) -> None:
    status, answer = await deliver(client, event("evt 1 with spaces"))

    assert status == 400
    assert answer["error"].startswith("reference: must be 1 to 64")
    assert ledger.listing() == []


async def test_invalid_event_is_kept_as_failed_and_answered_422_every_time(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    body = event("evt_1", description="x" * 101)
    first = await deliver(client, body)
    again = await deliver(client, body)

    expected = {"error": "description: at most 100 characters, got 101", "reference": "evt_1"}
    assert first == (422, expected)
    assert again == (422, expected)
    row = ledger.get("evt_1")
    assert row is not None
    assert (row.state, row.reason, row.source, row.amount_cents) == (
        "failed", expected["error"], "webhook", None)
    assert len(ledger.listing()) == 1
    assert enqueue.calls == []


@pytest.mark.parametrize(("fields", "argument"), [
    ({"amount": 12.345}, "amount:"), ({"amount": 0}, "amount:"),
    ({"amount": "lots"}, "amount:"), ({"contact": "not-a-guid"}, "contact_id:"),
    ({"contact": None}, "contact_id:"), ({"description": ""}, "description:"),
])
async def test_each_rule_is_named_in_the_422(
    client: TestClient, ledger: Ledger, fields: dict, argument: str
) -> None:
    status, answer = await deliver(client, event("evt_1", **fields))

    assert status == 422
    assert answer["error"].startswith(argument)
    row = ledger.get("evt_1")
    assert row is not None and row.state == "failed"


async def test_amount_is_read_exactly_not_through_a_float(
    client: TestClient, ledger: Ledger
) -> None:
    # As a float this is 25.0; its text has a third decimal that must be refused.
    body = event("evt_1").replace(b'"amount": 25', b'"amount": 25.0000000000000001')
    status, answer = await deliver(client, body)

    assert status == 422
    assert answer["error"].startswith("amount: at most 2 decimals")


async def test_other_event_types_are_ignored(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub
) -> None:
    status, answer = await deliver(client, event("evt_2", event_type="point.balance.updated"))

    assert (status, answer) == (200, {"ignored": "point.balance.updated"})
    assert ledger.listing() == []
    assert enqueue.calls == []


async def test_broker_down_still_answers_202_with_the_row_committed(
    client: TestClient, ledger: Ledger, enqueue: EnqueueStub, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue.down = True
    with caplog.at_level(logging.WARNING, logger="pointsync.web"):
        status, answer = await deliver(client, event("evt_1"))

    assert (status, answer) == (202, {"reference": "evt_1", "state": "received",
                                      "duplicate": False})
    row = ledger.get("evt_1")
    assert row is not None and row.state == "received"  # the sweep finishes it
    assert "evt_1: recorded, but queueing its task failed" in caplog.text
    assert "Connection refused" in caplog.text


async def test_delivery_replay_and_conflict_on_both_databases(
    serve: Callable[..., Any], make_settings: Callable[..., WebSettings], database_url: str,
    enqueue: EnqueueStub,
) -> None:
    store = prepare_store(database_url)
    client = await serve(make_settings(DATABASE_URL=database_url), store, enqueue)

    assert (await deliver(client, event("evt_1")))[1]["duplicate"] is False
    assert (await deliver(client, event("evt_1")))[1]["duplicate"] is True
    assert (await deliver(client, event("evt_1", amount=26)))[0] == 409
    assert (await deliver(client, event("evt_2", description="")))[0] == 422
    assert (await client.get("/health")).status == 200
    rows = {row.reference: row.state for row in Ledger(store).listing()}
    assert rows == {"evt_1": "received", "evt_2": "failed"}
