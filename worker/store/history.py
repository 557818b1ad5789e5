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
from collections.abc import Iterable, Mapping, Sequence
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
    case,
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


@dataclass(frozen=True)
class Received:
    """One answer's entries, ready to store: (key, time in µs, JSON text) each. Built as an
    answer arrives, so a chunk holds compact strings rather than the parsed entries."""

    rows: list[tuple[str, int, str]]

    @classmethod
    def of(cls, entries: Sequence[dict[str, Any]]) -> Received:
        """Raises MalformedHistory for an entry without a readable dateTime."""
        return cls([(key, entry_time_us(e), orjson.dumps(e).decode())
                    for e, key in zip(entries, entry_keys(entries), strict=True)])

    @property
    def newest_us(self) -> int | None:
        return max((at for _, at, _ in self.rows), default=None)


# Bound on the parameters of one IN (...) list (SQLite allows 32,766, older builds 999).
_IN_SLICE = 900


class HistoryStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def save(self, contact_id: str, entries: Iterable[dict[str, Any]]) -> int:
        """Store new entries (known ones are skipped) and mark the contact fetched, in one
        transaction; returns how many entries were new."""
        return self.save_many({contact_id: Received.of(list(entries))})[contact_id]

    def save_many(self, received: Mapping[str, Received]) -> dict[str, int]:
        """Several contacts' answers in one transaction: new entries stored (known ones
        skipped), each contact marked fetched, its newest entry time moved forward only.
        Returns how many entries were new, per contact."""
        if not received:
            return {}
        now = utcnow()
        # Sorted, so that two writers that meet on the same rows take their locks in the
        # same order (PostgreSQL would otherwise abort one of them as a deadlock).
        contacts = sorted(received)
        rows = sorted(
            ({"contact_id": contact_id, "entry_key": key, "at_us": at, "entry": text,
              "fetched_at": now}
             for contact_id in contacts for key, at, text in received[contact_id].rows),
            key=lambda row: (row["contact_id"], row["entry_key"]))
        added = dict.fromkeys(contacts, 0)
        marks = [{"contact_id": c, "fetched_at": now, "newest_at_us": received[c].newest_us}
                 for c in contacts]
        with self.engine.begin() as conn:
            if rows:
                # RETURNING names the new rows on every driver (an executemany's rowcount
                # is 0 under psycopg's batched inserts).
                for (contact_id,) in conn.execute(
                    insert_for(self.engine, points_history).on_conflict_do_nothing(
                        index_elements=["contact_id", "entry_key"])
                    .returning(points_history.c.contact_id),
                    rows,
                ):
                    added[contact_id] += 1
            conn.execute(self._mark_fetched(), marks)
        return added

    def _mark_fetched(self) -> Any:
        """The contact-fetched upsert: `newest_at_us` only ever moves forward (an empty or
        older answer, or another writer that got further first, keeps the stored one)."""
        upsert = insert_for(self.engine, history_contacts)
        new, old = upsert.excluded.newest_at_us, history_contacts.c.newest_at_us
        newest = case((new.is_(None), old), (old.is_(None), new), (new > old, new), else_=old)
        return upsert.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={"fetched_at": upsert.excluded.fetched_at, "newest_at_us": newest})

    def newest_times(self, contact_ids: Sequence[str]) -> dict[str, int | None]:
        """Where each contact's next fetch starts: its newest stored entry time (None when
        fetched but empty); contacts never fetched are absent. One query per 900 ids."""
        c = history_contacts.c
        known: dict[str, int | None] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(contact_ids), _IN_SLICE):
                rows = conn.execute(select(c.contact_id, c.newest_at_us).where(
                    c.contact_id.in_(contact_ids[start:start + _IN_SLICE])))
                known.update((contact_id, newest) for contact_id, newest in rows)
        return known

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
