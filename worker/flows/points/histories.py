"""Where the history read for a booking is kept, and where a booking's calls go.

A booking reads its contact's history for its receiptNr (receipts.py) and stores what it
read, which refreshes the contact's history at no extra cost. A single booking stores it at
once; a round (batch.py) stores every answer it read in one write when it ends, and looks up
where each contact's stored history ends with one query when it starts: a store read and a
write per booking were about a third of the worker's CPU in a round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from worker.flows.parts import Parts
from worker.store.database import Store
from worker.store.history import HistoryStore, Received
from worker.systems.treazure.client import PointCalls

log = logging.getLogger("pointsync.points")


class HistoryKeeper(Protocol):
    def newest(self, contact_id: str) -> int | None:
        """The newest stored entry's time (µs); None when nothing is stored."""

    def keep(self, contact_id: str, entries: list[dict[str, Any]]) -> None:
        """Keep an answer; raises MalformedHistory for one that cannot be stored."""


class StoredAtOnce:
    """Each answer stored as it is read (a single booking)."""

    def __init__(self, store: Store) -> None:
        self._store = HistoryStore(store)

    def newest(self, contact_id: str) -> int | None:
        known = self._store.fetched(contact_id)
        return None if known is None else known.newest_at_us

    def keep(self, contact_id: str, entries: list[dict[str, Any]]) -> None:
        self._store.save(contact_id, entries)


class StoredByRound:
    """A round's answers, stored together by `save`. The stored ends are read once, when
    the round starts: a contact's history refreshed meanwhile is read from a little
    earlier, which only reads more."""

    def __init__(self, store: Store, contact_ids: Iterable[str]) -> None:
        self._store = HistoryStore(store)
        self._newest = self._store.newest_times(sorted(set(contact_ids)))
        # One write per layer: a contact read twice in a round has its second answer in
        # the next layer (an answer's entries are keyed within that answer).
        self._layers: list[dict[str, Received]] = []

    def newest(self, contact_id: str) -> int | None:
        return self._newest.get(contact_id)

    def keep(self, contact_id: str, entries: list[dict[str, Any]]) -> None:
        received = Received.of(entries)
        for layer in self._layers:
            if contact_id not in layer:
                layer[contact_id] = received
                return
        self._layers.append({contact_id: received})

    def save(self) -> None:
        """Store what the round read (its bookings are in the ledger already: a failed
        write here loses only the copy, which the next read refreshes)."""
        layers, self._layers = self._layers, []
        try:
            for layer in layers:
                self._store.save_many(layer)
        except Exception as exc:
            log.warning("the histories this round read were not stored: %s", exc)


@dataclass(frozen=True)
class Means:
    """A booking's calls to Treazure, and where the history read for it is kept."""

    calls: PointCalls
    histories: HistoryKeeper

    @classmethod
    def single(cls, parts: Parts) -> Means:
        """A booking on its own: the client's httpx, each answer stored at once."""
        return cls(parts.treazure, StoredAtOnce(parts.store))
