"""The relay part of /metrics: per route the deliveries by state, the lost answers and the
oldest undelivered age, rendered by the real collector and read back with the parser."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.relays import age, nector_body, nector_headers, toggle_body, toggle_headers
from worker.faces.web.metrics import render
from worker.flows.relays.receive import NECTOR, TOGGLE, receive
from worker.store.database import Store
from worker.store.engine import make_engine, utcnow
from worker.store.relays import Relays, delivery_key
from worker.store.schema import upgrade_schema


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'relays.db'}")
    upgrade_schema(engine)
    yield Store(engine)
    engine.dispose()


def samples(store: Store, now: float) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = render(store, fakeredis.FakeRedis(), now=now).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_route_is_reported_as_zero_before_any_event(store: Store) -> None:
    found = samples(store, utcnow().timestamp())
    for route in ("toggle-atreemo", "nector-contlo"):
        assert found["pointsync_relay_oldest_undelivered_seconds", frozenset(
            {("route", route)})] == 0
        assert found["pointsync_relay_ambiguous_total", frozenset({("route", route)})] == 0
        assert found["pointsync_relay_deliveries", frozenset(
            {("route", route), ("state", "received")})] == 0


def test_states_lost_answers_and_the_oldest_undelivered_age(store: Store) -> None:
    for event_id in (7, 8):
        body = toggle_body(event_id, card=event_id)
        receive(store, TOGGLE, body, toggle_headers(body))
    body = nector_body()
    receive(store, NECTOR, body, nector_headers(body, "n-1"))
    relays = Relays(store)
    age(relays, 600)  # every delivery received 10 minutes ago
    key = delivery_key(TOGGLE, "7", "atreemo")
    row = relays.outbox.claim(key, 30)
    assert row is not None and row.lease_until is not None
    relays.lost_answer(key, row.lease_until)
    relays.finish(key, row.lease_until, "delivered")
    now = utcnow() + timedelta(seconds=60)

    found = samples(store, now.timestamp())

    def deliveries(route: str, state: str) -> float:
        return found["pointsync_relay_deliveries", frozenset({("route", route),
                                                              ("state", state)})]
    assert (deliveries("toggle-atreemo", "received"), deliveries("toggle-atreemo", "delivered"),
            deliveries("toggle-atreemo", "failed")) == (1, 1, 0)
    assert deliveries("nector-contlo", "received") == 1
    assert found["pointsync_relay_ambiguous_total", frozenset({("route", "toggle-atreemo")})] == 1
    oldest = found["pointsync_relay_oldest_undelivered_seconds",
                   frozenset({("route", "toggle-atreemo")})]
    assert 660 <= oldest < 700  # aged 600 s, scraped 60 s later
