"""Just before the worker forks a pool child: garbage collected, the rest frozen (so the
children's collections do not copy the pages they share), free heap handed back; after a
sync a child closes its pooled database connections."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from celery import signals
from sqlalchemy import text

import worker.faces.celery.app  # noqa: F401  (connects the worker's signal handlers)
from worker.base.memory import YOUNG_GENERATION_THRESHOLD, _libc, trim_heap


def test_before_a_child_is_forked_the_objects_are_frozen() -> None:
    assert gc.get_freeze_count() == 0
    try:
        signals.worker_before_create_process.send(sender=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_new_pool_child_collects_its_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        signals.worker_process_init.send(sender=None)
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *before[1:])
    finally:
        gc.set_threshold(*before)


@pytest.mark.skipif(_libc() is None, reason="not glibc")
def test_the_heap_is_trimmed_on_glibc() -> None:
    junk = [bytearray(1000) for _ in range(50_000)]  # ~50 MB in small blocks, then freed
    del junk
    assert trim_heap() is True


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_after_a_sync_a_child_closes_its_pooled_connections(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from worker.faces import runtime

    monkeypatch.setattr(runtime, "_stores", {})
    file_url, memory_url = f"sqlite:///{tmp_path / 'a.db'}", "sqlite://"
    on_file, in_memory = runtime.store_for(file_url), runtime.store_for(memory_url)
    with in_memory.engine.begin() as connection:
        connection.execute(text("CREATE TABLE kept (x INTEGER)"))
    with on_file.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    try:
        signals.task_postrun.send(sender=_Named("pointsync.add_points"))
        assert on_file.engine.pool.checkedin() == 1  # not after a point transaction
        signals.task_postrun.send(sender=_Named("pointsync.sync_balances"))
        assert on_file.engine.pool.checkedin() == 0
        with in_memory.engine.connect() as connection:  # the in-memory data is kept
            assert connection.execute(text("SELECT count(*) FROM kept")).scalar() == 0
    finally:
        on_file.engine.dispose()
        in_memory.engine.dispose()
