"""The sync flow end to end on both databases (respx answers HTTP)."""

from __future__ import annotations

import pytest

from tests.support.flows import FakeRemotes, Parts
from worker.flows.sync.lanes import READ_THREADS
from worker.flows.sync.run import run_sync
from worker.store.contacts import READER_CACHE_KIB, WRITER_CACHE_KIB
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


async def test_a_run_reads_on_a_connection_of_its_own_with_a_small_cache(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a re-run with nothing written, every pooled connection the reads went through
    filled its 16 MiB page cache (SQLite); the run's reads use one connection with a small
    cache, dropped afterwards, so the pool's connections keep the engine's setting."""
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(25)]
    remotes.add_page(*[(cid, i + 0.5, "2026-11-21T08:00:00Z") for i, cid in enumerate(ids)])
    compare = parts.store.changed_contact_states
    readers: set[object] = set()

    def spy(rows, run_id, conn=None):  # type: ignore[no-untyped-def]
        assert conn is not None
        readers.add(conn)
        if parts.store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -READER_CACHE_KIB
        return compare(rows, run_id, conn)

    monkeypatch.setattr(parts.store, "changed_contact_states", spy)
    parts.settings.ENGAGE_BATCH_SIZE = 5
    for _ in range(2):
        summary = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                                 parts.engage)
        assert summary.status == "succeeded"
    assert 2 <= len(readers) <= 2 * READ_THREADS  # one per reading thread of each run
    assert all(conn.closed for conn in readers)  # type: ignore[attr-defined]
    if parts.store.engine.dialect.name == "sqlite":
        with parts.store.engine.connect() as pooled:
            assert pooled.exec_driver_sql("PRAGMA cache_size").scalar() == -16384


async def test_a_run_writes_on_a_connection_of_its_own(
    parts: Parts, remotes: FakeRemotes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-behind commits on one connection of the run's own (its cache stays warm,
    not made stale by the pool's other connections), with a bounded cache (SQLite), dropped
    at the end."""
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(25)]
    remotes.add_page(*[(cid, i + 0.5, "2026-11-21T08:00:00Z") for i, cid in enumerate(ids)])
    save = parts.store.save_contact_states
    writers: list[object] = []

    def spy(states, rejections=(), conn=None):  # type: ignore[no-untyped-def]
        assert conn is not None
        writers.append(conn)
        if parts.store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -WRITER_CACHE_KIB
            conn.rollback()
        return save(states, rejections, conn)

    monkeypatch.setattr(parts.store, "save_contact_states", spy)
    summary = await run_sync(parts.settings, parts.store, parts.redis, parts.treazure,
                             parts.engage)
    assert (summary.status, summary.counts.pushed) == ("succeeded", 25)
    assert writers and len(set(map(id, writers))) == 1
    assert writers[0].closed  # type: ignore[attr-defined]
    assert parts.store.contact_states(ids[:1])[ids[0]].sent_cents == 50
