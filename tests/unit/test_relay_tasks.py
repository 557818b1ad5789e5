"""The relay tasks with a SQLite store and in-memory destinations: relay_subject delivers
and queues itself again for a retry due soon (a later one is the sweep's); sweep_relays
queues each subject whose task was lost."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.relays import FakeAtreemo, age, toggle_body, toggle_headers
from worker.base.http import Retryable
from worker.faces.celery import relay_tasks
from worker.faces.celery.app import app as celery_app
from worker.flows.relays import run
from worker.flows.relays.destinations import Atreemo
from worker.flows.relays.receive import TOGGLE, receive
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.relays import Relays
from worker.store.schema import upgrade_schema


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    engine = make_engine("sqlite://")
    upgrade_schema(engine)
    store = Store(engine)
    atreemo = FakeAtreemo()
    parts = SimpleNamespace(store=store, settings=SimpleNamespace(RELAY_MAX_AGE_SECONDS=86400))
    queued: list[dict[str, Any]] = []
    monkeypatch.setattr(relay_tasks, "run_with_parts", lambda work: asyncio.run(work(parts)))
    monkeypatch.setattr(run, "destinations_for",
                        lambda _parts: {"atreemo": Atreemo(atreemo, sends_emails=False)})
    monkeypatch.setattr(relay_tasks.relay_subject, "apply_async",
                        lambda **kw: queued.append(kw))
    return SimpleNamespace(store=store, atreemo=atreemo, queued=queued)


def record(store: Store, event_id: int) -> str:
    body = toggle_body(event_id)
    return receive(store, TOGGLE, body, toggle_headers(body)).subject


def test_the_tasks_are_registered() -> None:
    assert {"pointsync.relay_subject", "pointsync.sweep_relays"} <= set(celery_app.tasks)


def test_relay_subject_delivers_the_subject(world: SimpleNamespace) -> None:
    subject = record(world.store, 570)
    result = relay_tasks.relay_subject(TOGGLE, subject)
    assert result["settled"] == {"toggle:570:atreemo": "delivered"}
    assert world.atreemo.ids() == [570] and world.queued == []


@pytest.mark.parametrize(("retry_after", "requeued"), [(5.0, True), (600.0, False)])
def test_a_retry_due_soon_is_queued_again_a_later_one_left_to_the_sweep(
        world: SimpleNamespace, retry_after: float, requeued: bool) -> None:
    subject = record(world.store, 570)
    world.atreemo.fail_next(Retryable("atreemo", "HTTP 429", 429, retry_after=retry_after))
    relay_tasks.relay_subject(TOGGLE, subject)
    if requeued:
        (sent,) = world.queued
        assert sent["kwargs"] == {"source": TOGGLE, "subject": subject}
        assert 0 < sent["countdown"] <= retry_after
    else:
        assert world.queued == []


def test_the_sweep_queues_subjects_whose_task_was_lost(world: SimpleNamespace) -> None:
    subject = record(world.store, 570)
    assert relay_tasks.sweep_relays() == {"subjects": 0}
    age(Relays(world.store), 3600)
    assert relay_tasks.sweep_relays() == {"subjects": 1}
    assert world.queued == [{"kwargs": {"source": TOGGLE, "subject": subject},
                             "ignore_result": True}]
