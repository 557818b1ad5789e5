"""The sync flow end to end on both databases (respx answers HTTP)."""

from __future__ import annotations

import pytest

from tests.support.flows import FakeRemotes, Parts
from worker.flows.sync.run import run_sync
from worker.store.database import Store
from worker.store.engine import make_engine
from worker.store.schema import upgrade_schema


@pytest.fixture
def store(database_url: str) -> Store:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield Store(engine)
    engine.dispose()


async def test_sync_and_resync_on_each_database(parts: Parts, remotes: FakeRemotes) -> None:
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(25)]
    remotes.add_page(*[(cid, i + 0.5, "2026-11-21T08:00:00Z") for i, cid in enumerate(ids)])
    first = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage)
    second = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure, parts.engage)
    assert (first.status, first.counts.pushed) == ("succeeded", 25)
    assert (second.counts.pushed, second.counts.unchanged) == (0, 25)
    assert parts.store.watermark() is not None
