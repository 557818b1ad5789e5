"""The outbox on a table of its own (not the ledger's), on a SQLite file and on PostgreSQL:
a new flow gets record → claim → move → sweep → replay by declaring its table, no copying."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, update

from worker.store.engine import make_engine, utcnow
from worker.store.outbox import LeaseLost, Outbox, outbox_columns

OPEN = ("pending", "sent")


def deliveries_table() -> Table:
    """A throwaway relay table: one delivery per event and destination."""
    return Table(
        "relay_deliveries", MetaData(),
        *outbox_columns("relay_deliveries", key="delivery_id"),
        Column("destination", String(32), nullable=False),
    )


@pytest.fixture
def outbox(database_url: str) -> Iterator[Outbox[dict[str, Any]]]:
    engine = make_engine(database_url)
    table = deliveries_table()
    table.metadata.create_all(engine)
    yield Outbox(engine, table, open_states=OPEN, make_row=dict, noun="delivery")
    engine.dispose()


def record(outbox: Outbox[dict[str, Any]], key: str, state: str = "pending") -> dict[str, Any]:
    now = utcnow()
    row, created = outbox.insert_once({
        "delivery_id": key, "destination": "contlo", "state": state, "attempts": 0,
        "uncertain": False, "created_at": now, "updated_at": now})
    assert created
    return row


def set_row(outbox: Outbox[dict[str, Any]], key: str, **values: Any) -> None:
    with outbox.engine.begin() as conn:
        conn.execute(update(outbox.table).where(outbox.key == key).values(**values))


def test_insert_once_keeps_the_first_row(outbox: Outbox[dict[str, Any]]) -> None:
    first = record(outbox, "evt-1:contlo")
    assert (first["state"], first["attempts"], first["uncertain"]) == ("pending", 0, False)
    assert first["created_at"].tzinfo is not None  # UTC on SQLite too

    now = utcnow()
    again, created = outbox.insert_once({
        "delivery_id": "evt-1:contlo", "destination": "elsewhere", "state": "pending",
        "attempts": 0, "uncertain": False, "created_at": now, "updated_at": now})
    assert not created and again == first
    assert outbox.counts_by_state() == {"pending": 1}


def test_a_claim_excludes_a_second_claimer_until_the_lease_runs_out(
    outbox: Outbox[dict[str, Any]],
) -> None:
    record(outbox, "d1")
    first = outbox.claim("d1", 120)
    assert first is not None and first["lease_until"] is not None
    assert outbox.claim("d1", 120) is None  # held

    set_row(outbox, "d1", lease_until=utcnow() - timedelta(seconds=5))
    second = outbox.claim("d1", 120)
    assert second is not None and second["lease_until"] != first["lease_until"]
    assert outbox.claim("missing", 120) is None

    record(outbox, "done", state="delivered")  # a final state: nobody claims it
    assert outbox.claim("done", 120) is None


def test_a_move_with_a_stale_lease_raises_and_changes_nothing(
    outbox: Outbox[dict[str, Any]],
) -> None:
    record(outbox, "d1")
    stale = outbox.claim("d1", 120)
    assert stale is not None
    set_row(outbox, "d1", lease_until=utcnow() - timedelta(seconds=5))
    current = outbox.claim("d1", 120)
    assert current is not None

    with pytest.raises(LeaseLost, match="delivery d1"):
        outbox.move("d1", stale["lease_until"], state="sent")
    with pytest.raises(LeaseLost):
        outbox.mark_uncertain("d1", stale["lease_until"])
    row = outbox.get("d1")
    assert row is not None and (row["state"], row["uncertain"], row["attempts"]) == \
        ("pending", False, 0)

    lease = outbox.renew("d1", current["lease_until"], 300)
    outbox.mark_uncertain("d1", lease)
    outbox.move("d1", lease, state="sent", uncertain=False, lease_until=None)
    row = outbox.get("d1")
    assert row is not None and (row["state"], row["uncertain"], row["attempts"]) == \
        ("sent", False, 1)


def test_the_sweep_finds_lost_and_due_rows(outbox: Outbox[dict[str, Any]]) -> None:
    now = utcnow()
    record(outbox, "fresh")  # untouched a moment ago: its task may still be queued
    record(outbox, "stale")
    set_row(outbox, "stale", updated_at=now - timedelta(hours=1))
    record(outbox, "dead-holder")
    set_row(outbox, "dead-holder", lease_until=now - timedelta(seconds=5))
    record(outbox, "held")
    assert outbox.claim("held", 120) is not None
    record(outbox, "retry-due")
    outbox.release("retry-due", retry_in=-1)
    record(outbox, "retry-later")
    outbox.release("retry-later", retry_in=600)

    lost = {row["delivery_id"] for row in outbox.lost("pending", stale_seconds=60)}
    assert lost == {"stale", "dead-holder", "retry-due"}

    record(outbox, "sent-now", state="sent")
    record(outbox, "sent-later", state="sent")
    outbox.defer(["sent-later"], 600, reason="destination busy")
    assert [row["delivery_id"] for row in outbox.due("sent", 10)] == ["sent-now"]
    assert outbox.next_due("sent") is not None
    assert outbox.next_due("delivered") is None
    assert outbox.open_counts() == {"pending": 6, "sent": 2}


def test_a_failed_row_is_listed_and_reopened(outbox: Outbox[dict[str, Any]]) -> None:
    record(outbox, "d1")
    lease = outbox.claim("d1", 120)
    assert lease is not None
    outbox.mark_uncertain("d1", lease["lease_until"])
    outbox.fail("d1", "refused for good " + "x" * 3000, lease["lease_until"])
    failed = outbox.listing("failed")
    assert [row["delivery_id"] for row in failed] == ["d1"]
    assert len(failed[0]["reason"]) == 2000 and failed[0]["lease_until"] is None

    reopened = outbox.reopen("d1", "pending")
    assert reopened is not None
    assert (reopened["state"], reopened["reason"], reopened["attempts"]) == ("pending", None, 0)
    assert outbox.claim("d1", 120) is not None

    record(outbox, "d2")  # not failed: reopen leaves it as it is
    untouched = outbox.reopen("d2", "sent")
    assert untouched is not None and untouched["state"] == "pending"
    assert outbox.reopen("missing", "pending") is None
