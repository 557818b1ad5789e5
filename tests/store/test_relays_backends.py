"""The relays' tables (migration 0008) on a SQLite file and on a real PostgreSQL: an event
is recorded once with its deliveries, in one transaction; a subject's order; the outbox
moves on deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select

from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.outbox import LeaseLost
from worker.store.relays import Relays, relay_deliveries, relay_events
from worker.store.schema import upgrade_schema

AT = datetime(2026, 11, 21, 16, 1, 27, tzinfo=UTC)
BODY = b'{"id": 570, "type": "card.balance_adjusted", "x": "\xc2\xa3 10"}'


@pytest.fixture
def relays(database_url: str) -> Iterator[Relays]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield Relays(Store(engine))
    engine.dispose()


def record(relays: Relays, event_id: str, *, at: datetime = AT, subject: str = "card:501",
           destinations: tuple[str, ...] = ("atreemo",), body: bytes = BODY):
    return relays.record(source="toggle", event_id=event_id, topic="card.balance_adjusted",
                         subject=subject, source_created_at=at, body=body,
                         destinations=destinations)


def test_the_migration_matches_the_model(relays: Relays) -> None:
    inspector = inspect(relays.engine)
    for model in (relay_events, relay_deliveries):
        assert {c["name"] for c in inspector.get_columns(model.name)} == set(model.c.keys())
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("relay_deliveries")}
    assert indexes["ix_relay_deliveries_state"] == ["state", "next_attempt_at"]
    assert indexes["ix_relay_deliveries_subject"] == ["source", "subject", "state"]


def test_an_event_is_recorded_once_with_its_deliveries(relays: Relays) -> None:
    rows, created = record(relays, "570", destinations=("atreemo", "other"))
    assert created
    assert [(r.key, r.state, r.attempts, r.ambiguous) for r in rows] == [
        ("toggle:570:atreemo", "received", 0, 0), ("toggle:570:other", "received", 0, 0)]
    again, created_again = record(relays, "570", body=b"{}", destinations=("atreemo", "new"))
    assert not created_again and again == rows  # nothing recorded, nothing changed
    event = relays.event("toggle", "570")
    assert event is not None and event.body == BODY and event.source_created_at == AT
    with relays.engine.connect() as conn:
        assert conn.execute(select(relay_events)).all().__len__() == 1
        assert conn.execute(select(relay_deliveries)).all().__len__() == 2
    # The same id from another source is another event.
    other, created_other = relays.record(
        source="nector", event_id="570", topic="coupon_create", subject="customer:1",
        source_created_at=AT, body=b"{}", destinations=("contlo",))
    assert created_other and other[0].key == "nector:570:contlo"


def test_a_subjects_head_is_its_earliest_open_delivery(relays: Relays) -> None:
    record(relays, "1000", at=AT + timedelta(seconds=1))
    record(relays, "999", at=AT + timedelta(seconds=1))  # same time: the smaller id first
    record(relays, "998", at=AT + timedelta(seconds=2))
    record(relays, "5", subject="card:other")
    head = relays.head("toggle", "card:501")
    assert head is not None and head.event_id == "999"
    assert [r.event_id for r in relays.subject_rows("toggle", "card:501")] == [
        "999", "1000", "998"]
    claimed = relays.outbox.claim(head.key, 60)
    assert claimed is not None and claimed.lease_until is not None
    with pytest.raises(LeaseLost):
        relays.fail(head.key, "refused", claimed.lease_until - timedelta(seconds=1))
    relays.fail(head.key, "refused", claimed.lease_until)
    nxt = relays.head("toggle", "card:501")
    assert nxt is not None and nxt.event_id == "1000"  # the failed one is set aside
    claimed = relays.outbox.claim(nxt.key, 60)
    assert claimed is not None and claimed.lease_until is not None
    relays.lost_answer(nxt.key, claimed.lease_until)
    relays.finish(nxt.key, claimed.lease_until, "delivered")
    done = relays.get(nxt.key)
    assert done is not None and (done.state, done.ambiguous) == ("delivered", 1)
    assert done.finished_at is not None
    replayed = relays.replay(head.key)
    assert replayed is not None and (replayed.state, replayed.finished_at) == ("received", None)
