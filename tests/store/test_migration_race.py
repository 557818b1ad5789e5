"""Processes that start together on a fresh database all come up: the upgrade is serialised."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.store.engine import make_engine
from worker.store.schema import migrations_config

pytestmark = pytest.mark.integration

PROCESSES = 4


def _start(url: str, barrier: Barrier) -> None:
    """What every process does at start (worker, history worker, beat, web)."""
    from worker.faces.runtime import prepare_store

    barrier.wait()  # all four reach the upgrade at the same instant
    prepare_store(url)


def _start_together(url: str) -> list[int | None]:
    spawn = multiprocessing.get_context("spawn")  # real, separate interpreters
    barrier = spawn.Barrier(PROCESSES)
    processes = [spawn.Process(target=_start, args=(url, barrier)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    return [process.exitcode for process in processes]


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_four_processes_upgrading_one_fresh_database_all_come_up(database_url: str) -> None:
    exit_codes = _start_together(database_url)
    assert exit_codes == [0] * PROCESSES
    head = ScriptDirectory.from_config(migrations_config()).get_current_head()
    assert _revision(database_url) == head
