"""The relay part of /metrics: per route (toggle-atreemo, nector-contlo) the deliveries by
state, the sends whose answer was lost, and how long the oldest undelivered event has
waited (the figures of `pointsync relay status`)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from worker.flows.relays.status import STATES, route_status
from worker.store.database import Store
from worker.store.relays import Relays


def relays(store: Store, now: float) -> list[Metric]:
    """Every route named, with 0 before its first event (an alert compares a number)."""
    status = route_status(Relays(store), datetime.fromtimestamp(now, UTC))
    deliveries = GaugeMetricFamily(
        "pointsync_relay_deliveries",
        "Relay deliveries by route and state: received (not delivered yet), delivered, "
        "filtered (not the destination's), failed (`pointsync relay failed`)",
        labels=["route", "state"])
    ambiguous = GaugeMetricFamily(
        "pointsync_relay_ambiguous_total",
        "Relay sends whose answer was lost (each sent again), summed over the route's rows",
        labels=["route"])
    oldest = GaugeMetricFamily(
        "pointsync_relay_oldest_undelivered_seconds",
        "Age of the route's oldest delivery still received; 0 when none is",
        labels=["route"])
    for line in status:
        for state in STATES:
            deliveries.add_metric([line["route"], state], line[state])
        ambiguous.add_metric([line["route"]], line["ambiguous"])
        oldest.add_metric([line["route"]], line["oldest_undelivered_seconds"] or 0)
    return [deliveries, ambiguous, oldest]
