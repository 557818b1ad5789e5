"""Gift cards' tables (migration 0007) on a SQLite file and on a real PostgreSQL: each is an
outbox, so record-once, claim, lease-checked moves and the sweep's selection work on them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import inspect, update

from worker.store.database import Store
from worker.store.engine import make_engine, utcnow
from worker.store.giftcards import (
    Adjustments,
    LeaseLost,
    Orders,
    Redemptions,
    giftcard_orders,
    giftcard_redemptions,
)
from worker.store.schema import upgrade_schema

CONTACT = "6c1e2f4a-0b1c-4d2e-9f00-1a2b3c4d5e6f"
NUMBER = "6301190012345676946"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield Store(engine)
    engine.dispose()


def test_the_migration_creates_the_three_tables_with_their_sweep_index(store: Store) -> None:
    inspector = inspect(store.engine)
    for table in ("giftcard_orders", "giftcard_redemptions", "giftcard_adjustments"):
        assert table in inspector.get_table_names()
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(table)}
        assert indexes[f"ix_{table}_state"] == ["state", "next_attempt_at"]
    # The model and the migration agree column for column.
    for model in (giftcard_orders, giftcard_redemptions):
        assert {c["name"] for c in inspector.get_columns(model.name)} == set(model.c.keys())


def test_an_order_is_recorded_once_claimed_by_one_and_issued_with_the_lease(store: Store) -> None:
    orders = Orders(store)
    first, created = orders.record("gc-1", 2500, "guest@example.com", "Thanks", None, "task")
    again, created_again = orders.record("gc-1", 9999, None, None, None, "cli")
    assert created and not created_again and again == first
    assert (first.state, first.value_minor, first.final) == ("received", 2500, False)

    claimed = orders.outbox.claim("gc-1", 60)
    assert claimed is not None and claimed.lease_until is not None
    assert orders.outbox.claim("gc-1", 60) is None  # held
    with pytest.raises(LeaseLost):
        orders.issued("gc-1", claimed.lease_until - timedelta(seconds=1), order_id=1,
                      line_item_id=2, card_id=3, card_reference=NUMBER, card_masked="m")
    orders.issued("gc-1", claimed.lease_until, order_id=501, line_item_id=9001, card_id=77,
                  card_reference=NUMBER, card_masked="6301 19•• •••• ••• 6946")

    row = orders.get("gc-1")
    assert row is not None and row.final and row.state == "issued"
    assert (row.order_id, row.line_item_id, row.card_reference) == (501, 9001, NUMBER)
    assert row.lease_until is None and row.issued_at is not None
    assert orders.outbox.claim("gc-1", 60) is None  # final


def test_a_redemption_records_its_derived_references_and_steps_to_the_end(store: Store) -> None:
    redemptions = Redemptions(store)
    row, created = redemptions.record("rd-1", CONTACT, 50000, 2500, "g@example.com",
                                      "gift card rd-1", "task")
    assert created and row.state == "points_pending"
    assert (row.points_reference, row.refund_reference, row.order_reference) == (
        "rd-1-points", "rd-1-refund", "rd-1")

    claimed = redemptions.outbox.claim("rd-1", 60)
    assert claimed is not None and claimed.lease_until is not None
    redemptions.step("rd-1", claimed.lease_until, "points_taken")
    middle = redemptions.get("rd-1")
    assert middle is not None and middle.lease_until == claimed.lease_until  # still held
    redemptions.step("rd-1", claimed.lease_until, "refunded", reason="Card limit reached")
    end = redemptions.get("rd-1")
    assert end is not None and end.final and end.lease_until is None
    assert end.finished_at is not None and end.reason == "Card limit reached"


def test_the_sweep_finds_a_redemption_whose_worker_is_gone(store: Store) -> None:
    redemptions = Redemptions(store)
    redemptions.record("rd-lost", CONTACT, 100, 100, "g@example.com", "d", "task")
    redemptions.record("rd-fresh", CONTACT, 100, 100, "g@example.com", "d", "task")
    claimed = redemptions.outbox.claim("rd-lost", 60)
    assert claimed is not None and claimed.lease_until is not None
    redemptions.step("rd-lost", claimed.lease_until, "card_pending")
    with store.engine.begin() as conn:  # its worker died: the lease ran out
        conn.execute(update(giftcard_redemptions)
                     .where(giftcard_redemptions.c.reference == "rd-lost")
                     .values(lease_until=utcnow() - timedelta(seconds=1)))

    lost = redemptions.outbox.lost("card_pending", stale_seconds=120)
    assert [r.reference for r in lost] == ["rd-lost"]
    assert redemptions.outbox.lost("points_pending", stale_seconds=120) == []  # fresh


def test_an_adjustment_and_its_reversal_are_rows_of_their_own(store: Store) -> None:
    adjustments = Adjustments(store)
    row, created = adjustments.record("till-1", "adjust", NUMBER, -500, "london",
                                      "EPOS-LDN-1", "cli")
    reversal, _ = adjustments.record("till-1-REVERSAL", "reverse", None, None, "london",
                                     "EPOS-LDN-1", "cli", original_reference="till-1")
    assert created and row.state == "received" and row.value_minor == -500
    assert reversal.original_reference == "till-1" and reversal.kind == "reverse"
    assert adjustments.outbox.counts_by_state() == {"received": 2}
