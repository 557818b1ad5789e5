"""How each relay route stands, for the operator's `pointsync relay status` and /metrics:
deliveries by state, the sends whose answer was lost, the oldest undelivered one's age."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.flows.relays.receive import DESTINATIONS
from worker.store.engine import utcnow
from worker.store.outbox import FAILED
from worker.store.relays import DELIVERED, FILTERED, RECEIVED, Relays, RouteFigures

STATES = (RECEIVED, DELIVERED, FILTERED, FAILED)
# Every route, named even before its first event.
ROUTES = tuple((source, destination) for source, destinations in DESTINATIONS.items()
               for destination in destinations)


def route_status(relays: Relays, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per route (`toggle-atreemo`, …): deliveries by state, lost answers, the oldest
    undelivered one's age in seconds (None when every delivery is settled)."""
    at = now or utcnow()
    found = {(f.source, f.destination): f for f in relays.route_figures()}
    status = []
    for source, destination in sorted(set(ROUTES) | set(found)):
        figures = found.get((source, destination)) or RouteFigures(source, destination)
        oldest = figures.oldest_open_at
        status.append({
            "route": f"{source}-{destination}", "source": source, "destination": destination,
            **{state: figures.states.get(state, 0) for state in STATES},
            "ambiguous": figures.ambiguous,
            "oldest_undelivered_seconds":
                None if oldest is None else max(0.0, (at - oldest).total_seconds())})
    return status
