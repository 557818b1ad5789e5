"""Recording an event costs the same however many events were recorded before: it reads
through a key or a selective index, never a whole table, so the receivers answer fast
whatever the relay's history (a read of the deliveries by source and event id walked every
delivery of the source, and each record grew slower as the table did).

Measured in SQLite virtual-machine steps (its progress handler), not in time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.relays import RECEIVED, Relays, relay_deliveries, relay_events, sequence_of
from worker.store.schema import upgrade_schema

AT = datetime(2026, 11, 21, 16, 1, 27, tzinfo=UTC)
EARLIER = 3000  # events recorded before the measured ones


def vm_steps(engine: Engine, action: Callable[[], Any]) -> int:
    """SQLite virtual-machine instructions run by the statements `action()` sends."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    def attach(conn: Any, *_: Any) -> None:
        conn.connection.dbapi_connection.set_progress_handler(count, 1)

    event.listen(engine, "before_cursor_execute", attach)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", attach)
    return steps


def record(relays: Relays, event_id: str, subject: str) -> None:
    relays.record(source="toggle", event_id=event_id, topic="card.registered",
                  subject=subject, source_created_at=AT, body=b"{}",
                  destinations=("atreemo",))


def add_earlier_events(engine: Engine, count: int) -> None:
    """`count` recorded Toggle events with their deliveries, written in bulk."""
    events, deliveries = [], []
    for n in range(count):
        event_id, at = str(10_000 + n), AT - timedelta(seconds=n)
        events.append({"source": "toggle", "event_id": event_id, "topic": "card.registered",
                       "subject": f"card:{n}", "source_created_at": at, "body": b"{}",
                       "received_at": at})
        deliveries.append({
            "key": f"toggle:{event_id}:atreemo", "state": RECEIVED, "attempts": 0,
            "uncertain": False, "created_at": at, "updated_at": at, "source": "toggle",
            "event_id": event_id, "destination": "atreemo", "topic": "card.registered",
            "subject": f"card:{n}", "source_created_at": at,
            "sequence": sequence_of(event_id), "ambiguous": 0})
    with engine.begin() as conn:
        conn.execute(relay_events.insert(), events)
        conn.execute(relay_deliveries.insert(), deliveries)


def test_recording_costs_the_same_however_many_events_came_before(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'relays.db'}")
    upgrade_schema(engine)
    relays = Relays(Store(engine))
    record(relays, "1", "card:a")
    alone = vm_steps(engine, lambda: record(relays, "2", "card:b"))
    repeat_alone = vm_steps(engine, lambda: record(relays, "2", "card:b"))

    add_earlier_events(engine, EARLIER)
    among_many = vm_steps(engine, lambda: record(relays, "3", "card:c"))
    repeat_among_many = vm_steps(engine, lambda: record(relays, "3", "card:c"))
    engine.dispose()

    # A deeper B-tree costs a few steps more; a walk over the earlier events costs thousands.
    assert among_many < 2 * alone, (alone, among_many)
    assert repeat_among_many < 2 * repeat_alone, (repeat_alone, repeat_among_many)
