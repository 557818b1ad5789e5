"""Stored points history: Treazure's entries per contact, as received, without duplicates.

An entry has no id of its own in Treazure's answer, so its key is a hash of its canonical
JSON and, for the second and later of identical entries in one answer (two bookings alike
in the same second), their place among them: fetching the same history again (or an
overlapping incremental slice, which holds every entry of its first second) adds nothing,
and two identical entries stay two.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
)

from worker.base.money import utc_micros
from worker.store.database import Store
from worker.store.engine import as_utc, insert_for, metadata, utcnow

points_history = Table(
    "points_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("contact_id", String(64), nullable=False),
    Column("entry_key", String(64), nullable=False),
    Column("at_us", BigInteger, nullable=False),  # the entry's dateTime, µs since the epoch
    Column("entry", Text, nullable=False),  # the entry as Treazure sent it (JSON)
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("contact_id", "entry_key", name="uq_points_history_entry"),
    Index("ix_points_history_contact", "contact_id", "at_us"),
    Index("ix_points_history_at", "at_us"),
)

history_contacts = Table(
    "history_contacts",
    metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("newest_at_us", BigInteger),  # newest entry stored: where the next fetch starts
)


class MalformedHistory(ValueError):
    """An entry without a readable dateTime."""


@dataclass(frozen=True)
class Fetched:
    """What the store knows of a contact's history fetches."""

    fetched_at: datetime
    newest_at_us: int | None


def entry_key(entry: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()[:40]


def entry_keys(entries: Iterable[dict[str, Any]]) -> list[str]:
    """The keys of one answer's entries: the content's hash, then `-1`, `-2`, … for the
    repeats of an identical entry (the first keeps the bare hash that keys stored before
    this rule used)."""
    seen: Counter[str] = Counter()
    keys = []
    for entry in entries:
        key = entry_key(entry)
        keys.append(f"{key}-{seen[key]}" if seen[key] else key)
        seen[key] += 1
    return keys


def entry_time_us(entry: dict[str, Any]) -> int:
    try:
        return utc_micros(datetime.fromisoformat(str(entry["dateTime"])))
    except (KeyError, TypeError, ValueError):
        raise MalformedHistory(f"history entry without a valid dateTime: {entry!r}"[:300]) \
            from None


class HistoryStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def save(self, contact_id: str, entries: Iterable[dict[str, Any]]) -> int:
        """Store new entries (known ones are skipped) and mark the contact fetched, in one
        transaction; returns how many entries were new."""
        now = utcnow()
        entries = list(entries)
        rows: list[dict[str, Any]] = [
            {"contact_id": contact_id, "entry_key": key, "at_us": entry_time_us(e),
             "entry": orjson.dumps(e).decode(), "fetched_at": now}
            for e, key in zip(entries, entry_keys(entries), strict=True)
        ]
        newest = max((int(r["at_us"]) for r in rows), default=None)
        with self.engine.begin() as conn:
            added = 0
            if rows:
                # RETURNING counts the new rows on every driver (an executemany's rowcount
                # is 0 under psycopg's batched inserts).
                added = len(conn.execute(
                    insert_for(self.engine, points_history).on_conflict_do_nothing(
                        index_elements=["contact_id", "entry_key"])
                    .returning(points_history.c.id),
                    rows,
                ).all())
            known = conn.execute(
                select(history_contacts.c.newest_at_us)
                .where(history_contacts.c.contact_id == contact_id)
            ).first()
            if known is not None and known[0] is not None and (newest is None or known[0] > newest):
                newest = known[0]
            upsert = insert_for(self.engine, history_contacts).values(
                contact_id=contact_id, fetched_at=now, newest_at_us=newest)
            conn.execute(upsert.on_conflict_do_update(
                index_elements=["contact_id"],
                set_={"fetched_at": now, "newest_at_us": newest}))
        return added

    def fetched(self, contact_id: str) -> Fetched | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(history_contacts.c.fetched_at, history_contacts.c.newest_at_us)
                .where(history_contacts.c.contact_id == contact_id)
            ).first()
        if row is None:
            return None
        fetched_at = as_utc(row[0])
        assert fetched_at is not None  # the column is NOT NULL
        return Fetched(fetched_at, row[1])

    def page(self, contact_id: str, offset: int, count: int) -> tuple[list[dict[str, Any]], int]:
        """Entries newest first, and how many there are in all."""
        t = points_history.c
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(points_history).where(t.contact_id == contact_id)
            ).scalar_one()
            rows = conn.execute(
                select(t.entry).where(t.contact_id == contact_id)
                .order_by(t.at_us.desc(), t.id.desc()).offset(offset).limit(count)
            ).all()
        return [orjson.loads(row[0]) for row in rows], int(total)

    def purge_before(self, cutoff: datetime) -> int:
        """Delete entries older than `cutoff`; returns how many went."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(points_history).where(points_history.c.at_us < utc_micros(cutoff)))
        return int(result.rowcount or 0)
