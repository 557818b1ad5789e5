"""The relays' tables: every event a source sent us, and one delivery per event and
destination, an outbox (worker/store/outbox.py).

- `relay_events`: one row per (source, event id) — Toggle's `id`, Nector's delivery id —
  with the raw body as received (forwarded byte for byte), the event's type or topic, its
  subject (the card, order or customer it is about) and when the source created it.
- `relay_deliveries`: one row per event and destination, keyed
  `{source}:{event_id}:{destination}`: `received` → `delivered` | `filtered` |
  `failed(reason)`. `source_created_at` then `sequence` (the event id, zero-padded when it
  is a number) order a subject's deliveries; `ambiguous` counts the sends whose answer was
  lost (each one retried, since neither destination can be asked whether it got it).

An event and its deliveries are recorded in one transaction: a repeat records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    func,
    select,
)

from worker.store.database import Store
from worker.store.engine import as_utc, insert_for, metadata, utcnow
from worker.store.outbox import FAILED, Outbox, outbox_columns, utc_row

__all__ = ["DELIVERED", "FILTERED", "RECEIVED", "RELAY_OPEN", "DeliveryRow", "EventRow",
           "Relays", "RouteFigures", "delivery_key", "relay_deliveries", "relay_events",
           "sequence_of"]

RECEIVED, DELIVERED, FILTERED = "received", "delivered", "filtered"
RELAY_OPEN = (RECEIVED,)
ID_LENGTH = 128
SUBJECT_LENGTH = 200

relay_events = Table(
    "relay_events", metadata,
    Column("source", String(16), nullable=False),
    Column("event_id", String(ID_LENGTH), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("subject", String(SUBJECT_LENGTH), nullable=False),
    Column("source_created_at", DateTime(timezone=True), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("source", "event_id", name="pk_relay_events"),
)

relay_deliveries = Table(
    "relay_deliveries", metadata,
    *outbox_columns("relay_deliveries", key="key", key_length=300),
    Column("source", String(16), nullable=False),
    Column("event_id", String(ID_LENGTH), nullable=False),
    Column("destination", String(16), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("subject", String(SUBJECT_LENGTH), nullable=False),
    Column("source_created_at", DateTime(timezone=True), nullable=False),
    Column("sequence", String(ID_LENGTH), nullable=False),
    Column("ambiguous", Integer, nullable=False, default=0),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_relay_deliveries_subject", "source", "subject", "state"),
)


def delivery_key(source: str, event_id: str, destination: str) -> str:
    return f"{source}:{event_id}:{destination}"


def sequence_of(event_id: str) -> str:
    """The event id as a text that sorts as the source numbered it (Toggle's ids are
    numbers: 99 before 570)."""
    return event_id.zfill(20) if event_id.isdigit() else event_id


@dataclass(frozen=True)
class EventRow:
    source: str
    event_id: str
    topic: str
    subject: str
    source_created_at: datetime
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    key: str
    state: str
    reason: str | None
    attempts: int
    uncertain: bool
    lease_until: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime  # when we received the event
    updated_at: datetime
    source: str
    event_id: str
    destination: str
    topic: str
    subject: str
    source_created_at: datetime
    sequence: str
    ambiguous: int
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state not in RELAY_OPEN


def _maker(cls: type[Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return lambda data: cls(**{k: v for k, v in data.items() if k in names})


# Built once: the delivery loop reads a subject's head about three times per delivery,
# and building the statement each time cost more than running it (about 1.4 ms → 0.5 ms).
_d, _e = relay_deliveries.c, relay_events.c
_IN_ORDER = (select(relay_deliveries)
             .where(_d.source == bindparam("source"), _d.subject == bindparam("subject"))
             .order_by(_d.source_created_at, _d.sequence, _d.destination))
_HEAD = _IN_ORDER.where(_d.state.in_(RELAY_OPEN)).limit(1)
_EVENT = select(relay_events).where(_e.source == bindparam("source"),
                                    _e.event_id == bindparam("event_id"))
_SUBJECT = select(_e.subject).where(_e.source == bindparam("source"),
                                    _e.event_id == bindparam("event_id"))


class Relays:
    """The relay's events and deliveries: record, the subject's order, the outbox moves."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.outbox: Outbox[DeliveryRow] = Outbox(
            store.engine, relay_deliveries, open_states=RELAY_OPEN,
            make_row=_maker(DeliveryRow), noun="relay delivery")

    # -- recording ------------------------------------------------------------------------

    def record(
        self, *, source: str, event_id: str, topic: str, subject: str,
        source_created_at: datetime, body: bytes, destinations: Iterable[str],
    ) -> tuple[list[DeliveryRow], bool]:
        """Record the event and one delivery per destination in one transaction; a repeat
        of a recorded event records nothing. Returns the event's deliveries and whether
        this call recorded them."""
        now = utcnow()
        event = {"source": source, "event_id": event_id, "topic": topic,
                 "subject": subject[:SUBJECT_LENGTH], "source_created_at": source_created_at,
                 "body": body, "received_at": now}
        insert_event = (insert_for(self.engine, relay_events).values(**event)
                        .on_conflict_do_nothing())
        with self.engine.begin() as conn:
            created = conn.execute(insert_event.returning(relay_events.c.event_id)).first()
            if created is not None:
                stored_subject = event["subject"]
                for destination in destinations:
                    conn.execute(relay_deliveries.insert().values(
                        key=delivery_key(source, event_id, destination), state=RECEIVED,
                        attempts=0, uncertain=False, created_at=now, updated_at=now,
                        source=source, event_id=event_id, destination=destination,
                        topic=topic, subject=stored_subject,
                        source_created_at=source_created_at, sequence=sequence_of(event_id),
                        ambiguous=0))
            else:  # a repeat: its deliveries carry the subject recorded the first time
                stored_subject = conn.execute(_SUBJECT, {"source": source,
                                                         "event_id": event_id}).scalar_one()
        # By subject too, so the read goes through the subject's index: by source and event
        # id alone it walks every delivery of the source, slower as the table grows.
        t = relay_deliveries.c
        rows = self.outbox.rows(t.source == source, t.subject == stored_subject,
                                t.event_id == event_id, order_by=t.key)
        return rows, created is not None

    def event(self, source: str, event_id: str) -> EventRow | None:
        with self.engine.connect() as conn:
            found = conn.execute(_EVENT, {"source": source, "event_id": event_id}
                                 ).mappings().first()
        if found is None:
            return None
        row = utc_row(found)
        row["body"] = bytes(row["body"])
        return EventRow(**row)

    def get(self, key: str) -> DeliveryRow | None:
        return self.outbox.get(key)

    def has_topic(self, source: str, subject: str, topic: str) -> bool:
        """Whether any event of `topic` about `subject` is recorded (a backfill skips an
        order whose `order.created` was relayed live)."""
        t = relay_deliveries.c
        query = select(t.key).where(t.source == source, t.subject == subject,
                                    t.topic == topic).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- a subject's order ----------------------------------------------------------------

    def head(self, source: str, subject: str) -> DeliveryRow | None:
        """The subject's earliest open delivery in the source's creation order: the only
        one that may be sent now (failed ones are set aside and do not hold it up)."""
        with self.engine.connect() as conn:
            found = conn.execute(_HEAD, {"source": source, "subject": subject}
                                 ).mappings().first()
        return None if found is None else self.outbox.make_row(utc_row(found))

    def subject_rows(self, source: str, subject: str) -> list[DeliveryRow]:
        with self.engine.connect() as conn:
            found = conn.execute(_IN_ORDER, {"source": source, "subject": subject}
                                 ).mappings().all()
        return [self.outbox.make_row(utc_row(row)) for row in found]

    def lost_subjects(self, stale_seconds: float, limit: int = 1000) -> list[tuple[str, str]]:
        """(source, subject) of the open deliveries whose worker is presumed lost or whose
        retry is due (see Outbox.lost), each subject once, oldest first."""
        seen: dict[tuple[str, str], None] = {}
        for row in self.outbox.lost(RECEIVED, stale_seconds, limit=limit):
            seen.setdefault((row.source, row.subject), None)
        return list(seen)

    # -- moves (with the holder's lease) --------------------------------------------------

    def finish(self, key: str, lease: datetime, state: str, reason: str | None = None) -> None:
        """Final: delivered or filtered (failed goes through `fail`)."""
        assert state in (DELIVERED, FILTERED)
        self.outbox.move(key, lease, state=state, reason=reason, uncertain=False,
                         lease_until=None, next_attempt_at=None, finished_at=utcnow())

    def fail(self, key: str, reason: str, lease: datetime) -> None:
        self.outbox.fail(key, reason, lease)
        self.outbox.move(key, None, finished_at=utcnow())

    def lost_answer(self, key: str, lease: datetime) -> None:
        """A send whose answer was lost: counted on the row (it will be sent again)."""
        self.outbox.move(key, lease, uncertain=False,
                         ambiguous=relay_deliveries.c.ambiguous + 1)

    def replay(self, key: str) -> DeliveryRow | None:
        """A failed delivery back to `received`, its attempts counted afresh."""
        row = self.outbox.reopen(key, RECEIVED)
        if row is not None and row.state == RECEIVED:
            self.outbox.move(key, None, finished_at=None)
            return self.outbox.get(key)
        return row

    def failed(self, limit: int = 50) -> list[DeliveryRow]:
        return self.outbox.listing(FAILED, limit)

    # -- operators' figures ---------------------------------------------------------------

    def route_figures(self) -> list[RouteFigures]:
        """Per (source, destination) present: deliveries by state, the lost answers
        summed, and when the oldest one still `received` was recorded."""
        t = relay_deliveries.c
        route = (t.source, t.destination)
        with self.engine.connect() as conn:
            by_state = conn.execute(select(*route, t.state, func.count(),
                                           func.sum(t.ambiguous)).group_by(*route, t.state)).all()
            oldest = conn.execute(select(*route, func.min(t.created_at))
                                  .where(t.state.in_(RELAY_OPEN)).group_by(*route)).all()
        found: dict[tuple[str, str], RouteFigures] = {}
        for source, destination, state, count, ambiguous in by_state:
            figures = found.setdefault((source, destination), RouteFigures(source, destination))
            figures.states[state] = int(count)
            figures.ambiguous += int(ambiguous or 0)
        for source, destination, at in oldest:
            found[source, destination].oldest_open_at = as_utc(at)
        return [found[key] for key in sorted(found)]


@dataclass
class RouteFigures:
    source: str
    destination: str
    states: dict[str, int] = field(default_factory=dict)
    ambiguous: int = 0
    oldest_open_at: datetime | None = None
