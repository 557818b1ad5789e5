"""What a dead holder's lease running out does, without the wait: every outbox row still
held is free to be claimed again. The flows' leases are constants (a gift card's 60 s, a
relay delivery's 20 s), so tests that kill a holder move the rows' clocks instead."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, Table, update

from worker.store.engine import utcnow


def expire_leases(engine: Engine, *tables: Table) -> None:
    """Every held row of these outbox tables, its lease run out a second ago."""
    past = utcnow() - timedelta(seconds=1)
    with engine.begin() as conn:
        for table in tables:
            conn.execute(update(table).where(table.c.lease_until.is_not(None))
                         .values(lease_until=past))
