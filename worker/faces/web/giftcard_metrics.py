"""The gift-card part of /metrics: Toggle's answers by outcome, the credits left in the
shared budget, and gift-card rows by state."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import Redis

from worker.base.settings import Settings
from worker.base.telemetry import OUTCOMES_KEY, read_responses
from worker.store.database import Store
from worker.store.giftcards import Adjustments, Orders, Redemptions
from worker.systems.toggle.session import credits_key


def toggle(redis: Redis, settings: Settings | None) -> list[Metric]:
    """From Redis: the outcome counts every worker flushed; the credits where Toggle is
    configured (left out otherwise)."""
    outcomes = CounterMetricFamily(
        "pointsync_toggle_answers",
        "Toggle's answers by outcome, summed over every process: ok, refused, duplicate, "
        "unauthorized, throttled, lost (a mutation's answer), transport (retried)",
        labels=["outcome"])
    for (service, outcome), count in sorted(read_responses(redis, OUTCOMES_KEY).items()):
        if service == "toggle":
            outcomes.add_metric([outcome], count)
    families: list[Metric] = [outcomes]
    if settings is not None and settings.toggle_enabled:
        families.append(GaugeMetricFamily(
            "pointsync_toggle_credits_left",
            "Credits in the shared Toggle budget now (below 0 while requests wait for "
            "reserved ones)", value=credits_left(redis, settings)))
    return families


def credits_left(redis: Redis, settings: Settings) -> float:
    """What CreditBucket.available() would say, read without writing: the saved credits
    plus the refill since, capped at the maximum (a missing bucket is a full one)."""
    maximum = float(settings.TOGGLE_CREDITS_MAX)
    saved, at = redis.hmget(credits_key(settings), "credits", "at")
    if saved is None or at is None:
        return maximum
    seconds, micros = redis.time()
    now_us = int(seconds) * 1_000_000 + int(micros)
    refill = max(0, now_us - int(at)) / 1_000_000 * settings.TOGGLE_CREDITS_REFILL_PER_SECOND
    return min(maximum, float(saved) + refill)


def states(store: Store) -> list[Metric]:
    """Gift-card rows by kind and state (every state present; none before the first)."""
    family = GaugeMetricFamily(
        "pointsync_giftcards",
        "Gift-card rows by kind (order, redemption, till) and state: received/issued/"
        "failed orders, the points → card steps (refunded: Toggle refused, points back), "
        "till operations received/applied/failed (`pointsync giftcard failed`)",
        labels=["kind", "state"])
    for kind, outbox in (("order", Orders(store).outbox),
                         ("redemption", Redemptions(store).outbox),
                         ("till", Adjustments(store).outbox)):
        for state, count in sorted(outbox.counts_by_state().items()):
            family.add_metric([kind, state], count)
    return [family]
