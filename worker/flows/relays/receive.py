"""Record a source's event and its deliveries, before the source is answered.

The verifier (the route's) has proven the body genuine; reading it gives the event's id,
type or topic, subject and creation time. The event and one delivery per destination are
committed in one transaction, so a recorded event always has its deliveries; a repeat
(the same id) records nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from worker.store.database import Store
from worker.store.engine import utcnow
from worker.store.relays import Relays
from worker.systems.nector import webhooks as nector
from worker.systems.toggle import webhooks as toggle

TOGGLE, NECTOR = "toggle", "nector"
ORDER_CREATED = "order.created"
# Where each source's events go.
DESTINATIONS: dict[str, tuple[str, ...]] = {TOGGLE: ("atreemo",), NECTOR: ("contlo",)}


class Unreadable(Exception):
    """A genuine delivery that is not an event of its source: answered 400, not recorded."""


@dataclass(frozen=True)
class Received:
    source: str
    event_id: str
    topic: str
    subject: str
    created_at: datetime
    recorded: bool  # False: a repeat of a recorded event, nothing recorded

    @property
    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "id": self.event_id, "type": self.topic,
                "duplicate": not self.recorded}


def read(source: str, body: bytes, headers: Mapping[str, str],
         received_at: datetime | None = None) -> tuple[str, str, str, datetime]:
    """(event id, topic, subject, the source's creation time), or Unreadable."""
    at = received_at or utcnow()
    try:
        if source == TOGGLE:
            t = toggle.read_event(body, at)
            return t.event_id, t.type, t.subject, t.created_at
        n = nector.read_event(body, headers, at)
        return n.delivery_id, n.topic, n.subject, n.created_at
    except (toggle.BadToggleEvent, nector.BadNectorEvent) as exc:
        raise Unreadable(str(exc)) from None


def receive(store: Store, source: str, body: bytes, headers: Mapping[str, str]) -> Received:
    """Read and record one verified delivery (raises Unreadable, or the database's error)."""
    event_id, topic, subject, created_at = read(source, body, headers)
    relays = Relays(store)
    destinations: tuple[str, ...] = DESTINATIONS[source]
    if source == TOGGLE and topic == ORDER_CREATED and relays.has_topic(source, subject, topic):
        # The order's creation is recorded already (by a backfill, or live under another id):
        # this event is kept, and Atreemo, which does not deduplicate, is not sent it again.
        destinations = ()
    _, recorded = relays.record(
        source=source, event_id=event_id, topic=topic, subject=subject,
        source_created_at=created_at, body=body, destinations=destinations)
    return Received(source, event_id, topic, subject, created_at, recorded)
